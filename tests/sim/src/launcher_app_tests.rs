//! Tests of the launcher app's input handling and layout.

use super::*;

fn touch(app: &mut LauncherApp, action: TouchAction, pointer: u64, (x, y): (i32, i32)) -> bool {
    app.apply(&InputEvent::Touch {
        action,
        pointer,
        x: x.into(),
        y: y.into(),
    })
}

#[test]
fn tap_on_a_button_counts_and_highlights_it() {
    let mut app = LauncherApp::new(1080, 2400);
    let (x, y) = app.layout().buttons["B"].center();
    assert!(app.apply(&InputEvent::Tap {
        x: x.into(),
        y: y.into()
    }));
    assert_eq!(app.presses(1), 1);
    assert_eq!(app.last_button(), Some("B"));
    // A touch down then up on the same button counts once, and the marker follows the finger.
    assert!(touch(&mut app, TouchAction::Down, 0, (x, y)));
    assert!(app.any_pointer_down());
    touch(&mut app, TouchAction::Up, 0, (x, y));
    assert!(!app.any_pointer_down());
    assert_eq!(app.presses(1), 2);
    // Outside every button: nothing counts.
    let changed = app.apply(&InputEvent::Tap { x: 1, y: 2000 });
    assert!(!changed);
    assert_eq!(app.presses(0) + app.presses(2), 0);
}

#[test]
fn swipe_and_scroll_move_the_list() {
    let mut app = LauncherApp::new(1080, 2400);
    let list = app.layout().list;
    let (x, y) = list.center();
    app.apply(&InputEvent::Swipe {
        x1: x.into(),
        y1: y.into(),
        x2: x.into(),
        y2: (y - 300).into(),
        duration_ms: None,
    });
    assert_eq!(app.scroll(), 300);
    // Scrolling up by one unit (0x7FFF ~ 1.0 = 16 notches) goes back to the top, clamped.
    app.apply(&InputEvent::Scroll {
        x: x.into(),
        y: y.into(),
        hscroll: 0,
        vscroll: i16::MAX,
    });
    assert_eq!(app.scroll(), 0);
    app.apply(&InputEvent::Scroll {
        x: x.into(),
        y: y.into(),
        hscroll: 0,
        vscroll: i16::MIN,
    });
    assert_eq!(app.scroll(), 16 * app.layout().row_height);
    // Never past the end.
    for _ in 0..10 {
        app.apply(&InputEvent::Scroll {
            x: x.into(),
            y: y.into(),
            hscroll: 0,
            vscroll: i16::MIN,
        });
    }
    assert_eq!(app.scroll(), app.layout().max_scroll());
}

#[test]
fn rotation_swaps_and_lays_out_again() {
    let mut app = LauncherApp::new(1080, 2400);
    let portrait_list = app.layout().list;
    assert!(app.apply(&InputEvent::Rotate));
    assert_eq!(app.size(), (2400, 1080));
    assert_eq!(app.rotation(), 1);
    assert_ne!(app.layout().list, portrait_list);
    let button = app.layout().buttons["C"];
    assert!(button.x + button.width <= 2400 && button.width > 288);
    let (x, y) = button.center();
    app.apply(&InputEvent::Tap {
        x: x.into(),
        y: y.into(),
    });
    assert_eq!(app.last_button(), Some("C"));
    for _ in 0..3 {
        app.apply(&InputEvent::Rotate);
    }
    assert_eq!((app.size(), app.rotation()), ((1080, 2400), 0));
}

#[test]
fn text_and_keys_edit_the_field() {
    let mut app = LauncherApp::new(720, 1280);
    app.apply(&InputEvent::Text {
        text: "hi there".into(),
    });
    app.apply(&InputEvent::Key {
        code: 67,
        action: Some(PressAction::Down),
    });
    app.apply(&InputEvent::Key {
        code: 67,
        action: Some(PressAction::Up),
    });
    app.apply(&InputEvent::Key {
        code: 31,
        action: None,
    });
    assert_eq!(app.text(), "hi therc");
    app.apply(&InputEvent::Key {
        code: 3,
        action: None,
    });
    assert_eq!(app.last_key().as_deref(), Some("HOME"));
    app.apply(&InputEvent::Text {
        text: "x".repeat(5000),
    });
    assert_eq!(app.text().len(), TEXT_LIMIT);
}

#[test]
fn tiny_and_huge_screens_do_not_panic() {
    for (w, h) in [(1, 1), (8, 8), (0, 0), (u32::MAX, 3)] {
        let mut app = LauncherApp::new(w, h);
        app.apply(&InputEvent::Tap {
            x: i64::MAX,
            y: i64::MIN,
        });
        app.apply(&InputEvent::Rotate);
        app.apply(&InputEvent::Scroll {
            x: 0,
            y: 0,
            hscroll: 1,
            vscroll: -1,
        });
    }
}
