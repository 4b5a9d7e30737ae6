//! `screenrecord --output-format=h264 [--size WxH] [--time-limit N] [--bit-rate R] -`: option parsing.

use crate::shell_words::{Token, tokenize};

/// Android's default and largest time limit, in seconds.
pub const DEFAULT_TIME_LIMIT: u32 = 180;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScreenRecordOptions {
    /// Output size; `None` = the screen size.
    pub size: Option<(u32, u32)>,
    pub time_limit_secs: u32,
}

/// `None` when `line` is not a screenrecord command; otherwise the options or the stderr
/// text of a refused command (exit 1).
pub fn parse(line: &str) -> Option<Result<ScreenRecordOptions, String>> {
    let words: Vec<String> = tokenize(line)
        .ok()?
        .into_iter()
        .filter_map(|token| match token {
            Token::Word(word) => Some(word),
            _ => None,
        })
        .collect();
    let (program, args) = words.split_first()?;
    if program != "screenrecord" {
        return None;
    }
    Some(parse_args(args))
}

fn parse_args(args: &[String]) -> Result<ScreenRecordOptions, String> {
    let mut options = ScreenRecordOptions {
        size: None,
        time_limit_secs: DEFAULT_TIME_LIMIT,
    };
    let (mut h264, mut stdout) = (false, false);
    let mut index = 0;
    while let Some(arg) = args.get(index) {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(value) = inline.clone() {
                return Ok(value);
            }
            index += 1;
            args.get(index)
                .cloned()
                .ok_or_else(|| format!("screenrecord: option {name} needs a value\n"))
        };
        match name {
            "--output-format" => h264 = value()? == "h264",
            "--size" => {
                let size = value()?;
                let parsed = size
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                    .filter(|&(w, h)| (2..=4096).contains(&w) && (2..=4096).contains(&h));
                match parsed {
                    Some((w, h)) => options.size = Some((w & !1, h & !1)),
                    None => return Err(format!("Invalid size '{size}', must be width x height\n")),
                }
            }
            "--time-limit" => {
                let limit = value()?;
                match limit.parse::<u32>() {
                    Ok(secs) if (1..=DEFAULT_TIME_LIMIT).contains(&secs) => {
                        options.time_limit_secs = secs
                    }
                    _ => {
                        return Err(format!(
                            "Time limit {limit} seconds out of range [1,{DEFAULT_TIME_LIMIT}]\n"
                        ));
                    }
                }
            }
            "--bit-rate" | "--display-id" => {
                value()?;
            }
            "--verbose" | "--bugreport" | "--rotate" => {}
            "-" => stdout = true,
            other => {
                return Err(format!(
                    "screenrecord: the simulator only streams --output-format=h264 to '-' (got {other})\n"
                ));
            }
        }
        index += 1;
    }
    if !h264 || !stdout {
        return Err(
            "screenrecord: the simulator only streams --output-format=h264 to '-'\n".to_string(),
        );
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        assert_eq!(
            parse("screenrecord --output-format=h264 --size 720x1280 --time-limit 1 -"),
            Some(Ok(ScreenRecordOptions {
                size: Some((720, 1280)),
                time_limit_secs: 1
            }))
        );
        assert_eq!(
            parse("screenrecord --output-format h264 --bit-rate=8000000 -"),
            Some(Ok(ScreenRecordOptions {
                size: None,
                time_limit_secs: 180
            }))
        );
        assert_eq!(parse("echo screenrecord"), None);
        for bad in [
            "screenrecord /sdcard/x.mp4",
            "screenrecord --output-format=h264 --time-limit 0 -",
            "screenrecord --output-format=h264 --size 1x -",
            "screenrecord --output-format=h264 --size",
        ] {
            assert!(matches!(parse(bad), Some(Err(_))), "{bad}");
        }
    }
}
