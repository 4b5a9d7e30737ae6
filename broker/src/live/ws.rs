//! The signalling WebSocket a browser opens for a live session: `/api/v1/devices/{id}/live`.
//!
//! JSON text messages (LIVE_CONTRACTS.md). The socket is accepted first and
//! refusals are sent as `error` + `end` messages, so the page can say why.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use farm_proto::v1 as pb;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{FromBrowser, IceServer, ToBrowser};
use crate::domain::Role;
use crate::grpc::Api;

/// Largest signalling message accepted (an SDP offer is a few KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Malformed messages tolerated before the socket is closed.
const MAX_ERRORS: u32 = 10;

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    token: Option<String>,
    #[serde(default)]
    observe: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Incoming {
    Offer {
        sdp: String,
    },
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMid", default)]
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex", default)]
        sdp_mline_index: Option<u32>,
        #[serde(rename = "usernameFragment", default)]
        _ufrag: Option<String>,
    },
    Bye,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    Ready {
        session: &'a str,
        control: bool,
        #[serde(rename = "iceServers")]
        ice_servers: &'a [IceServer],
    },
    Answer {
        sdp: &'a str,
    },
    Candidate {
        candidate: &'a str,
        #[serde(rename = "sdpMid")]
        sdp_mid: &'a str,
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: u32,
    },
    Size {
        width: u32,
        height: u32,
    },
    End {
        reason: &'a str,
    },
    Error {
        message: &'a str,
    },
}

/// Parses one browser message; the error says what was wrong.
pub fn parse_incoming(text: &str) -> Result<FromBrowser, String> {
    if text.len() > MAX_MESSAGE {
        return Err(format!(
            "message of {} bytes is over the {MAX_MESSAGE}-byte limit",
            text.len()
        ));
    }
    let incoming: Incoming =
        serde_json::from_str(text).map_err(|e| format!("bad signalling message: {e}"))?;
    Ok(match incoming {
        Incoming::Offer { sdp } => {
            if !sdp.starts_with("v=0") {
                return Err("the offer is not an SDP description".into());
            }
            if !sdp.contains("m=video") {
                return Err("the offer has no video section: offer to receive video".into());
            }
            FromBrowser::Offer(sdp)
        }
        Incoming::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
            ..
        } => {
            if candidate.len() > 1024 || candidate.contains(['\r', '\n']) {
                return Err("malformed ICE candidate".into());
            }
            FromBrowser::Candidate(pb::IceCandidate {
                candidate,
                sdp_mid: sdp_mid.unwrap_or_default(),
                sdp_mline_index: sdp_mline_index.unwrap_or(0),
            })
        }
        Incoming::Bye => FromBrowser::Bye,
    })
}

fn encode(out: &ToBrowser) -> String {
    let msg = match out {
        ToBrowser::Ready {
            session,
            control,
            ice_servers,
        } => Outgoing::Ready {
            session,
            control: *control,
            ice_servers,
        },
        ToBrowser::Answer(sdp) => Outgoing::Answer { sdp },
        ToBrowser::Candidate(c) => Outgoing::Candidate {
            candidate: &c.candidate,
            sdp_mid: &c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
        },
        ToBrowser::Size { width, height } => Outgoing::Size {
            width: *width,
            height: *height,
        },
        ToBrowser::End(reason) => Outgoing::End { reason },
        ToBrowser::Error(message) => Outgoing::Error { message },
    };
    serde_json::to_string(&msg)
        .unwrap_or_else(|_| r#"{"type":"error","message":"internal encoding error"}"#.into())
}

/// `GET /api/v1/devices/{id}/live?token=T[&observe=1]`
pub async fn live_socket(
    State(api): State<Api>,
    Path(device_id): Path<String>,
    Query(query): Query<LiveQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.token.map(|t| format!("Bearer {t}")));
    let observe = matches!(query.observe.as_deref(), Some("1" | "true" | "yes"));
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(api, socket, device_id, header, observe))
}

async fn serve(
    api: Api,
    socket: WebSocket,
    device_id: String,
    header: Option<String>,
    observe: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let send = |out: ToBrowser| Message::Text(Utf8Bytes::from(encode(&out)));
    let caller = match api
        .auth
        .require(header.as_deref(), &[Role::User, Role::Admin])
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = sink.send(send(ToBrowser::Error(e.message.clone()))).await;
            let _ = sink.send(send(ToBrowser::End(e.message))).await;
            let _ = sink.close().await;
            return;
        }
    };
    let (to_browser, mut outbox) = mpsc::channel(64);
    let session = match api.live.open(caller, device_id, observe, to_browser).await {
        Ok(id) => id,
        Err(e) => {
            let _ = sink.send(send(ToBrowser::Error(e.message.clone()))).await;
            let _ = sink.send(send(ToBrowser::End(e.message))).await;
            let _ = sink.close().await;
            return;
        }
    };
    let mut errors = 0;
    loop {
        tokio::select! {
            out = outbox.recv() => match out {
                Some(out) => {
                    let last = matches!(out, ToBrowser::End(_));
                    if sink.send(send(out)).await.is_err() {
                        api.live.browser_gone(&session).await;
                        return;
                    }
                    if last {
                        let _ = sink.close().await;
                        return;
                    }
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => match parse_incoming(text.as_str()) {
                    Ok(msg) => api.live.from_browser(&session, msg).await,
                    Err(why) => {
                        errors += 1;
                        let _ = sink.send(send(ToBrowser::Error(why))).await;
                        if errors >= MAX_ERRORS {
                            api.live.browser_gone(&session).await;
                            let _ = sink.send(send(ToBrowser::End("too many malformed messages".into()))).await;
                            let _ = sink.close().await;
                            return;
                        }
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    errors += 1;
                    let _ = sink.send(send(ToBrowser::Error("binary messages are not part of the protocol".into()))).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // An oversized frame also lands here (the socket refuses it).
                    api.live.browser_gone(&session).await;
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_must_be_sdp_with_video() {
        assert!(matches!(
            parse_incoming(r#"{"type":"offer","sdp":"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}"#),
            Ok(FromBrowser::Offer(_))
        ));
        let e = parse_incoming(r#"{"type":"offer","sdp":"v=0\r\nm=audio 9 x\r\n"}"#);
        assert!(e.is_err_and(|e| e.contains("no video")));
        assert!(parse_incoming(r#"{"type":"offer","sdp":"hello"}"#).is_err());
    }

    #[test]
    fn garbage_and_oversized_messages_are_refused_with_a_reason() {
        assert!(
            parse_incoming("not json")
                .unwrap_err()
                .contains("bad signalling message")
        );
        assert!(parse_incoming(r#"{"type":"launch-missiles"}"#).is_err());
        assert!(parse_incoming(r#"{"type":"offer"}"#).is_err());
        let huge = format!(
            r#"{{"type":"offer","sdp":"v=0 m=video {}"}}"#,
            "x".repeat(MAX_MESSAGE)
        );
        assert!(parse_incoming(&huge).is_err_and(|e| e.contains("limit")));
        assert!(parse_incoming(r#"{"type":"candidate","candidate":"a\r\nb"}"#).is_err());
    }

    #[test]
    fn candidates_keep_their_fields() {
        let c = parse_incoming(
            r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab"}"#,
        )
        .expect("valid");
        let FromBrowser::Candidate(c) = c else {
            panic!("not a candidate")
        };
        assert_eq!(c.sdp_mid, "0");
        assert!(encode(&ToBrowser::Candidate(c)).contains(r#""sdpMid":"0""#));
    }

    #[test]
    fn outgoing_messages_use_the_contract_names() {
        let ready = encode(&ToBrowser::Ready {
            session: "s".into(),
            control: true,
            ice_servers: vec![],
        });
        assert_eq!(
            ready,
            r#"{"type":"ready","session":"s","control":true,"iceServers":[]}"#
        );
        assert_eq!(
            encode(&ToBrowser::End("lease expired".into())),
            r#"{"type":"end","reason":"lease expired"}"#
        );
    }
}
