//! Locks the window when the operating system locks the user's session or puts the machine to
//! sleep. Linux: logind on the system bus (`org.freedesktop.login1`): the Manager's
//! `PrepareForSleep(true)`, and this session's `Lock` signal and `LockedHint` becoming true
//! (what `loginctl lock-session` and desktop screen lockers send or set). Other platforms have
//! no watcher yet (Windows: WTS session notifications and `PBT_APMSUSPEND`; macOS: NSWorkspace
//! sleep and `com.apple.screenIsLocked` notifications); there the idle lock still counts the
//! time asleep (see `hearth_auth::IdleLock`).

use crate::signon::SignOn;
use std::sync::Arc;
use zbus::export::futures_core::Stream;
use zbus::OwnedObjectPath;

const LOGIND: &str = "org.freedesktop.login1";
const MANAGER_PATH: &str = "/org/freedesktop/login1";
const MANAGER: &str = "org.freedesktop.login1.Manager";
const SESSION: &str = "org.freedesktop.login1.Session";

/// Why following logind stopped.
#[derive(Debug, thiserror::Error)]
#[error("following the system's session lock and sleep (logind): {0}")]
pub struct OsLockError(#[from] zbus::Error);

/// Follows logind on the system bus for this process's session (see [`follow_logind`]).
pub async fn follow_system(signon: Arc<SignOn>) -> Result<(), OsLockError> {
    let bus = zbus::Connection::system().await?;
    let session = own_session(&bus).await;
    follow_logind(signon, bus, session).await
}

/// This process's logind session: by its pid, else `XDG_SESSION_ID`. `None` outside a
/// session (a service, a test display): then only sleep is followed.
pub async fn own_session(bus: &zbus::Connection) -> Option<OwnedObjectPath> {
    let manager = zbus::Proxy::new(bus, LOGIND, MANAGER_PATH, MANAGER)
        .await
        .ok()?;
    if let Ok(path) = manager
        .call::<_, _, OwnedObjectPath>("GetSessionByPID", &(std::process::id(),))
        .await
    {
        return Some(path);
    }
    let id = std::env::var("XDG_SESSION_ID").ok()?;
    manager
        .call::<_, _, OwnedObjectPath>("GetSession", &(id,))
        .await
        .ok()
}

/// Locks `signon` whenever logind on `bus` (the system bus: `zbus::Connection::system()`)
/// says the machine is about to sleep, or that `session` is locked. Runs until the bus goes.
pub async fn follow_logind(
    signon: Arc<SignOn>,
    bus: zbus::Connection,
    session: Option<OwnedObjectPath>,
) -> Result<(), OsLockError> {
    let manager = zbus::Proxy::new(&bus, LOGIND, MANAGER_PATH, MANAGER).await?;
    let mut sleep = Some(manager.receive_signal("PrepareForSleep").await?);
    let (mut lock, mut hint) = (None, None);
    if let Some(path) = session {
        let proxy = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(&bus)
            .destination(LOGIND)
            .path(path)
            .interface(SESSION)
            // Properties are read when they change, not fetched at start.
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        lock = Some(proxy.receive_signal("Lock").await?);
        hint = Some(
            zbus::Proxy::new(
                &bus,
                LOGIND,
                proxy.path().to_owned(),
                "org.freedesktop.DBus.Properties",
            )
            .await?
            .receive_signal("PropertiesChanged")
            .await?,
        );
    }
    loop {
        let (which, message) = tokio::select! {
            m = next(&mut sleep) => ("sleep", m),
            m = next(&mut lock) => ("lock", m),
            m = next(&mut hint) => ("hint", m),
        };
        let Some(message) = message else {
            // That stream ended (the bus went); the others may go on.
            match which {
                "sleep" => sleep = None,
                "lock" => lock = None,
                _ => hint = None,
            }
            if sleep.is_none() && lock.is_none() && hint.is_none() {
                return Ok(());
            }
            continue;
        };
        let body = message.body();
        let locks = match which {
            "sleep" => body.deserialize::<bool>().unwrap_or(false),
            "lock" => true,
            _ => body
                .deserialize::<(
                    String,
                    std::collections::HashMap<String, zbus::OwnedVariant>,
                    Vec<String>,
                )>()
                .ok()
                .and_then(|(iface, changed, _)| {
                    (iface == SESSION)
                        .then(|| {
                            changed
                                .get("LockedHint")
                                .and_then(|v| v.downcast_ref::<bool>().ok())
                        })
                        .flatten()
                })
                .unwrap_or(false),
        };
        if locks {
            signon.lock_for(if which == "sleep" {
                "the system went to sleep"
            } else {
                "the session was locked"
            });
        }
    }
}

/// The next message of a signal stream; never, once it is gone.
async fn next(stream: &mut Option<zbus::proxy::SignalStream<'_>>) -> Option<zbus::Message> {
    match stream {
        Some(s) => std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await,
        None => std::future::pending().await,
    }
}
