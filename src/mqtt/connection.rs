//! The broker connection's edges: what a failed connection means for a person, and the
//! eventloop polled on a task of its own.

use rumqttc::{ConnectReturnCode, ConnectionError, Event as MqttEvent, EventLoop};

/// What to tell the user about a failed connection, in one line.
pub(crate) fn describe(err: &ConnectionError, broker: &str) -> String {
    // TLS failures reach us as text inside rumqttc's wrappers (an alert from the broker comes
    // back as an I/O error of the MQTT state): name the ones a person can fix.
    let text = err.to_string();
    if text.contains("CertificateRequired") {
        return format!(
            "the broker {broker} requires a client certificate: set mqtt.client_cert and mqtt.client_key ({text})"
        );
    }
    if text.contains("alert: BadCertificate") || text.contains("alert: UnknownCA") {
        return format!(
            "the broker {broker} refused this box's certificate (mqtt.client_cert): is it signed by the CA the broker trusts? ({text})"
        );
    }
    if text.contains("invalid peer certificate") {
        return format!(
            "the certificate of the broker {broker} is not trusted: set mqtt.ca_file to the CA that signed it, and check the host name in mqtt.url ({text})"
        );
    }
    match err {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => format!("the broker {broker} refused the login: wrong mqtt.username or mqtt.password"),
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker {broker} refused the connection ({code:?})")
        }
        ConnectionError::Tls(e) => format!(
            "TLS with {broker} failed ({e}); is the port a TLS port (mqtts://, usually 8883)?"
        ),
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to the broker {broker}: connection refused (is it running?)")
        }
        ConnectionError::Io(e) => format!("connection to the broker {broker}: {e}"),
        ConnectionError::NetworkTimeout => format!("the broker {broker} did not answer in time"),
        ConnectionError::NotConnAck(_) => format!(
            "{broker} does not speak MQTT as expected (a TLS port with mqtt://, or another service?)"
        ),
        other => format!("connection to the broker {broker}: {other}"),
    }
}

/// Polls `eventloop` on a task of its own until it fails (the failure is the last item), and
/// hands over what it says.
pub(super) fn poll_forever(
    mut eventloop: EventLoop,
) -> tokio::sync::mpsc::Receiver<Result<MqttEvent, ConnectionError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let failed = ev.is_err();
            if tx.send(ev).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}
