//! The node's services behind the broker link: live sessions (WebRTC) and WebDriver slots.
//!
//! The link routes `live`, `http_request` and `http_body` commands here and
//! carries back what the services send. Until a service is configured, its
//! commands get a clear refusal instead of silence.

use farm_proto::v1::{
    HttpResponseHead, LiveEnd, LiveSignal, NodeMessage, SlotInventory, live_signal::Signal,
    node_message::Msg,
};
use tokio::sync::{mpsc, watch};

use crate::broker_link::{LinkServices, ServiceCommand};
use crate::config::Config;
use crate::devices::DeviceSetHandle;

/// Starts the services; returns the link's side of their channels and the task.
pub fn spawn(
    _config: &Config,
    _devices: DeviceSetHandle,
    mut shutdown: watch::Receiver<bool>,
) -> (LinkServices, tokio::task::JoinHandle<()>) {
    let (commands, mut command_rx) = mpsc::channel(1024);
    let (messages_tx, messages) = mpsc::channel(1024);
    let (slots_tx, slots) = watch::channel(SlotInventory::default());
    let (connection, _connection_rx) = watch::channel(0);
    let task = tokio::spawn(async move {
        let _slots = slots_tx;
        loop {
            let command = tokio::select! {
                command = command_rx.recv() => match command {
                    Some(c) => c,
                    None => return,
                },
                () = crate::wait_for_shutdown(&mut shutdown) => return,
            };
            if let Some(reply) = refuse(command) {
                let _ = messages_tx.send(reply).await;
            }
        }
    });
    (
        LinkServices {
            commands,
            messages,
            slots,
            connection,
        },
        task,
    )
}

/// The answer of a node that does not offer the service a command asks for.
fn refuse(command: ServiceCommand) -> Option<NodeMessage> {
    match command {
        ServiceCommand::Live(LiveSignal {
            session_id,
            signal: Some(Signal::Start(_)),
        }) => Some(NodeMessage {
            msg: Some(Msg::Live(LiveSignal {
                session_id,
                signal: Some(Signal::End(LiveEnd {
                    reason: "this node does not offer live sessions".into(),
                })),
            })),
        }),
        ServiceCommand::HttpRequest(head) => Some(NodeMessage {
            msg: Some(Msg::HttpResponse(HttpResponseHead {
                stream_id: head.stream_id,
                status: 0,
                headers: Vec::new(),
                error: "this node has no WebDriver slots".into(),
            })),
        }),
        _ => None,
    }
}
