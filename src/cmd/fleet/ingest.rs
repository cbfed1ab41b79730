//! What the fleet view reads off the broker: the topic of each box's message turned into a
//! [`FleetWrite`] (a pure function), and the subscriber loop that hands them to the fleet writer
//! and acknowledges each to the broker only once it is committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS};
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::db::fleet::{FleetWrite, PlaceKind};
use crate::pipeline::values::EventMsg;

/// Reads one message of `<prefix>/...`. None: not a topic the fleet keeps (Home Assistant's
/// discovery lives elsewhere), or a payload that does not parse, which is skipped (and acked:
/// it would not parse the second time either).
pub(crate) fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Option<FleetWrite> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let text = || std::str::from_utf8(payload).ok().map(str::trim);
    let number = || text()?.parse::<i64>().ok();
    let device = (*parts.first()?).to_string();
    if device.is_empty() {
        return None;
    }
    Some(match parts[1..] {
        ["available"] => FleetWrite::Available {
            device,
            online: match text()? {
                "online" => true,
                "offline" => false,
                _ => return None,
            },
        },
        ["events"] => {
            let msg: EventMsg = serde_json::from_slice(payload).ok()?;
            FleetWrite::Event {
                device,
                kind: msg.kind,
                event: msg.event,
            }
        }
        ["stats"] => FleetWrite::Stats {
            device,
            json: valid_json(payload)?,
        },
        ["info"] => FleetWrite::Info {
            device,
            json: valid_json(payload)?,
        },
        [camera, "line", line, direction] => FleetWrite::Place {
            device,
            camera: camera.into(),
            kind: match direction {
                "left" => PlaceKind::LineLeft,
                "right" => PlaceKind::LineRight,
                _ => return None,
            },
            name: line.into(),
            value: number()?,
        },
        [camera, "zone", zone] => FleetWrite::Place {
            device,
            camera: camera.into(),
            kind: PlaceKind::Zone,
            name: zone.into(),
            value: number()?,
        },
        [camera, label, "snapshot"] => FleetWrite::Snapshot {
            device,
            camera: camera.into(),
            label: label.into(),
            jpeg: payload
                .starts_with(&[0xff, 0xd8])
                .then(|| payload.to_vec())?,
        },
        [camera, label] => FleetWrite::Place {
            device,
            camera: camera.into(),
            kind: PlaceKind::Label,
            name: label.into(),
            value: number()?,
        },
        _ => return None,
    })
}

fn valid_json(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .map(|v| v.to_string())
}

/// The subscriber's state, for the fleet's own stats.
#[derive(Debug, Default)]
pub(crate) struct IngestStats {
    pub connected: AtomicBool,
    /// Messages stored and acknowledged.
    pub stored: AtomicU64,
    /// Messages of `<prefix>/#` that were not for the fleet or did not parse.
    pub skipped: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// What the writer hands back once a message is committed: the publish to acknowledge.
pub(crate) type Ack = Option<Publish>;

/// The broker connection of `ocellus fleet`: a persistent session (clean_session = false,
/// QoS 1, a fixed client id), so messages published while the fleet view is down are kept
/// for it by the broker; manual acknowledgements, so a message is acknowledged only when the
/// writer has committed it.
pub(crate) fn options(
    cfg: &MqttConfig,
    client_id: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<MqttOptions, crate::config::MqttUrlError> {
    let mut o = crate::mqtt::broker_options(cfg, client_id, tls.as_ref())?;
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_inflight(1000);
    Ok(o)
}

/// Subscribes to `<prefix>/#` and hands every message to `writes` with its publish; acks come
/// back on `acks` after the commit. Reconnects with backoff until `stop`.
pub(crate) async fn run(
    opts: MqttOptions,
    prefix: String,
    broker: String,
    writes: tokio::sync::mpsc::Sender<(FleetWrite, Ack)>,
    mut acks: tokio::sync::mpsc::UnboundedReceiver<Publish>,
    stats: Arc<IngestStats>,
    stop: CancellationToken,
) {
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let topic = format!("{prefix}/#");
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(p) = acks.recv() => {
                // A lost ack only means the broker sends the message again; stored once.
                let _ = client.try_ack(&p);
                stats.stored.fetch_add(1, Ordering::Relaxed);
            }
            ev = eventloop.poll() => match ev {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(500);
                    stats.connected.store(true, Ordering::Relaxed);
                    *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!(broker = %broker, session = ack.session_present, "fleet: connected to {broker}, reading {topic}");
                    if !ack.session_present {
                        if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "fleet: cannot subscribe");
                        }
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    match parse(&prefix, &p.topic, &p.payload) {
                        Some(w) => {
                            let ack = (p.qos != QoS::AtMostOnce).then_some(p);
                            if writes.send((w, ack)).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            stats.skipped.fetch_add(1, Ordering::Relaxed);
                            let _ = client.try_ack(&p);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    let msg = crate::mqtt::describe(&e, &broker);
                    {
                        let mut last = stats.last_error.lock().unwrap_or_else(|p| p.into_inner());
                        if last.as_deref() != Some(msg.as_str()) {
                            tracing::warn!("fleet: {msg}; retrying");
                        }
                        *last = Some(msg);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
        }
    }
    let _ = client.try_disconnect();
    // Let the disconnect go out.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boxs_topics_become_fleet_writes_and_others_are_skipped() {
        let p = |t: &str, b: &[u8]| parse("ocellus", t, b);
        assert_eq!(
            p("ocellus/pi-1/available", b"offline"),
            Some(FleetWrite::Available {
                device: "pi-1".into(),
                online: false
            })
        );
        assert_eq!(p("ocellus/pi-1/available", b"maybe"), None);
        assert_eq!(
            p("ocellus/pi-1/gate/line/door/left", b"1212"),
            Some(FleetWrite::Place {
                device: "pi-1".into(),
                camera: "gate".into(),
                kind: PlaceKind::LineLeft,
                name: "door".into(),
                value: 1212
            })
        );
        assert!(matches!(
            p("ocellus/pi-1/gate/zone/drive", b"2"),
            Some(FleetWrite::Place {
                kind: PlaceKind::Zone,
                value: 2,
                ..
            })
        ));
        assert!(matches!(
            p("ocellus/pi-1/gate/person", b"3"),
            Some(FleetWrite::Place {
                kind: PlaceKind::Label,
                value: 3,
                ..
            })
        ));
        assert!(matches!(
            p("ocellus/pi-1/gate/person/snapshot", &[0xff, 0xd8, 0xff]),
            Some(FleetWrite::Snapshot { .. })
        ));
        // Not a JPEG, not JSON, not ours.
        assert_eq!(p("ocellus/pi-1/gate/person/snapshot", b"GIF89a"), None);
        assert_eq!(p("ocellus/pi-1/stats", b"{not json"), None);
        assert_eq!(p("homeassistant/sensor/x/config", b"{}"), None);
        assert_eq!(p("ocellusx/pi-1/available", b"online"), None);
        let ev = br#"{"type":"event","kind":"end","event":{"id":42,"camera":"gate","label":"person","track_id":3,"start_ms":1,"end_ms":9,"top_score":0.8,"box":{"x":1,"y":2,"w":3,"h":4},"best_ms":2,"hits":5}}"#;
        match p("ocellus/pi-1/events", ev) {
            Some(FleetWrite::Event {
                device,
                kind,
                event,
            }) => {
                assert_eq!(
                    (device.as_str(), kind, event.id, event.end_ms),
                    ("pi-1", crate::pipeline::values::EventKind::End, 42, Some(9))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
