//! DeviceService: list, get and watch devices.

use std::pin::Pin;

use farm_proto::v1 as pb;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::convert::{check_required, device_to_pb, filter};
use super::{Api, CLIENT_ROLES};
use crate::domain::{DeviceState, Selector};
use crate::fleet::{DeviceView, FleetEvent};

fn keep(view: &DeviceView, sel: &Selector, state: Option<DeviceState>) -> bool {
    sel.matches(&view.device) && state.is_none_or(|s| s == view.state())
}

#[tonic::async_trait]
impl pb::device_service_server::DeviceService for Api {
    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        self.caller(&req, CLIENT_ROLES).await?;
        let (sel, state) = filter(req.into_inner().filter)?;
        let devices = self
            .fleet
            .devices()
            .await?
            .iter()
            .filter(|v| keep(v, &sel, state))
            .map(device_to_pb)
            .collect();
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        self.caller(&req, CLIENT_ROLES).await?;
        let id = req.into_inner().id;
        check_required("id", &id)?;
        let view = self.fleet.device(id).await?;
        Ok(Response::new(device_to_pb(&view)))
    }

    type WatchDevicesStream = Pin<Box<dyn Stream<Item = Result<pb::DeviceEvent, Status>> + Send>>;

    async fn watch_devices(
        &self,
        req: Request<pb::WatchDevicesRequest>,
    ) -> Result<Response<Self::WatchDevicesStream>, Status> {
        self.caller(&req, CLIENT_ROLES).await?;
        let (sel, state) = filter(req.into_inner().filter)?;
        // Subscribe before the snapshot so no change falls between them.
        let mut events = self.fleet.subscribe();
        let snapshot = self.fleet.devices().await?;
        let fleet = self.fleet.clone();
        let stream = async_stream(move |tx| async move {
            let send_all = |views: Vec<DeviceView>| {
                views
                    .into_iter()
                    .filter(|v| keep(v, &sel, state))
                    .map(|v| pb::DeviceEvent {
                        event: Some(pb::device_event::Event::Updated(device_to_pb(&v))),
                    })
                    .collect::<Vec<_>>()
            };
            for e in send_all(snapshot) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                let batch = match events.recv().await {
                    Ok(FleetEvent::Device(v)) => {
                        // A device leaving the filter is still sent, so the watcher sees it go.
                        vec![pb::DeviceEvent {
                            event: Some(pb::device_event::Event::Updated(device_to_pb(&v))),
                        }]
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => match fleet.devices().await {
                        Ok(all) => send_all(all),
                        Err(_) => return,
                    },
                    Err(RecvError::Closed) => return,
                };
                for e in batch {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A stream fed by a task through a bounded channel; the task ends when the client goes.
pub(super) fn async_stream<T, F, Fut>(body: F) -> tokio_stream::wrappers::ReceiverStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(body(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
