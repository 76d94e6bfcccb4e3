//! libnice settings webrtcbin does not expose: restricting ICE host candidates to chosen local
//! addresses (`--ice-address`), UPnP off, and ICE restarts (webrtcbin 1.22 never restarts
//! its agent, whatever the descriptions say).
//!
//! webrtcbin exposes its libnice agent (`ice-agent` → `agent`) but libnice has no Rust
//! bindings, so the one call we need is declared here. Once an address is added, libnice
//! gathers host candidates on the added addresses only — which is how tests stay on 127.0.0.1
//! (libnice otherwise ignores loopback interfaces entirely).

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::net::IpAddr;

use glib::prelude::*;
use glib::translate::ToGlibPtr;

#[repr(C)]
struct NiceAddress {
    _private: [u8; 0],
}

#[link(name = "nice")]
unsafe extern "C" {
    fn nice_address_new() -> *mut NiceAddress;
    fn nice_address_free(addr: *mut NiceAddress);
    fn nice_address_set_from_string(addr: *mut NiceAddress, str: *const c_char) -> c_int;
    fn nice_agent_add_local_address(agent: *mut c_void, addr: *const NiceAddress) -> c_int;
    fn nice_agent_restart_stream(agent: *mut c_void, stream_id: c_uint) -> c_int;
    fn nice_agent_get_local_credentials(
        agent: *mut c_void,
        stream_id: c_uint,
        ufrag: *mut *mut c_char,
        pwd: *mut *mut c_char,
    ) -> c_int;
    fn nice_agent_set_remote_credentials(
        agent: *mut c_void,
        stream_id: c_uint,
        ufrag: *const c_char,
        pwd: *const c_char,
    ) -> c_int;
}

#[derive(Debug, thiserror::Error)]
pub enum IceError {
    #[error("webrtcbin has no libnice agent to restrict")]
    NoAgent,
    #[error("libnice refused local address {0}")]
    Refused(IpAddr),
    #[error("ICE restart needs one bundled transport; this call has {0}")]
    NotBundled(usize),
    #[error("libnice would not restart ICE stream {0}")]
    RestartRefused(u32),
}

/// A side's ICE username fragment and password (`a=ice-ufrag`, `a=ice-pwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ufrag: String,
    pub pwd: String,
}

/// Turns libnice's UPnP off. With it on (libnice's default) every call's agent looks for an
/// Internet gateway and asks it to forward ports to this device — a camera must not open
/// holes in the router it sits behind — and builds a GUPnP context per interface each call.
/// Set before gathering (the agent reads it when gathering starts).
fn disable_upnp(webrtcbin: &gst::Element) {
    if let Some(agent) = nice_agent(webrtcbin)
        && agent.find_property("upnp").is_some()
    {
        agent.set_property("upnp", false);
    }
}

/// webrtcbin's libnice agent (a NiceAgent GObject), for the properties webrtcbin does not
/// expose.
fn nice_agent(webrtcbin: &gst::Element) -> Option<glib::Object> {
    let ice: glib::Object = webrtcbin.property("ice-agent");
    ice.find_property("agent")?;
    Some(ice.property("agent"))
}

/// libnice's check pacing (Ta) for every call: see [`pace_checks`]. RFC 8445 allows down to
/// 5 ms.
pub const CHECK_PACING_MS: u32 = 5;

/// Everything a call's agent needs before it gathers: UPnP and ICE-TCP off, checks paced at
/// [`CHECK_PACING_MS`].
pub fn configure_agent(webrtcbin: &gst::Element) {
    disable_upnp(webrtcbin);
    disable_tcp(webrtcbin);
    pace_checks(webrtcbin, CHECK_PACING_MS);
}

/// Paces libnice's connectivity checks every `ms` (its "Ta", 20 ms by default). libnice sends
/// one check per tick, the triggered check answering a peer's first check included, and only
/// nominates a pair — the moment DTLS may start — on a later tick; at 20 ms a call whose
/// daemon offered waited ~70 ms in these ticks before its handshake began (measured against
/// Chromium's log). A device has a handful of candidate pairs, so a shorter Ta costs a few
/// more small packets while a call connects. Set before the checks start.
fn pace_checks(webrtcbin: &gst::Element, ms: u32) {
    if let Some(agent) = nice_agent(webrtcbin)
        && agent.find_property("stun-pacing-timer").is_some()
    {
        agent.set_property("stun-pacing-timer", ms);
    }
}

/// Turns ICE over TCP off: calls gather UDP host candidates (and TURN relays) only. With
/// libnice as the controlled side, a browser whose UDP path died moved to an ICE-TCP pair
/// and nominated it, but libnice refuses to create a pair of lower priority than the selected
/// one, so it kept sending into the dead UDP pair: media one way only, on a call both ends
/// saw as connected, and the browser never restarted ICE (measured, see the notes). It also
/// saves a listening TCP socket per call. Restrictive networks are TURN's job.
fn disable_tcp(webrtcbin: &gst::Element) {
    let ice: glib::Object = webrtcbin.property("ice-agent");
    if ice.find_property("ice-tcp").is_some() {
        ice.set_property("ice-tcp", false);
    }
}

/// Adds each address as a local ICE address of webrtcbin's agent. Call before gathering.
pub fn restrict_host_addresses(webrtcbin: &gst::Element, addrs: &[IpAddr]) -> Result<(), IceError> {
    if addrs.is_empty() {
        return Ok(());
    }
    // Keep the ice-agent object referenced while we use its NiceAgent.
    let ice: glib::Object = webrtcbin.property("ice-agent");
    if ice.find_property("agent").is_none() {
        return Err(IceError::NoAgent);
    }
    let agent: glib::Object = ice.property("agent");
    for addr in addrs {
        let text = CString::new(addr.to_string()).map_err(|_| IceError::Refused(*addr))?;
        // SAFETY: `agent` is a live NiceAgent (a GObject we hold a reference to for the whole
        // block); the NiceAddress is allocated, filled and freed here and never escapes.
        let ok = unsafe {
            let nice_addr = nice_address_new();
            let ok = nice_address_set_from_string(nice_addr, text.as_ptr()) != 0
                && nice_agent_add_local_address(
                    ToGlibPtr::<*mut glib::gobject_ffi::GObject>::to_glib_none(&agent).0
                        as *mut c_void,
                    nice_addr,
                ) != 0;
            nice_address_free(nice_addr);
            ok
        };
        if !ok {
            return Err(IceError::Refused(*addr));
        }
    }
    drop(ice);
    Ok(())
}

/// Restarts ICE on webrtcbin's one (bundled) transport, as RFC 8445 §9 asks: libnice makes
/// new local credentials, forgets the remote candidates and checks, and checks again once the
/// peer's new candidates come; the pair in use keeps carrying media until a new one is chosen,
/// and DTLS and SRTP go on over whichever pair that is. Returns the new local credentials, for
/// the description that tells the peer. The call's descriptions must already be negotiated.
pub fn restart(webrtcbin: &gst::Element) -> Result<Credentials, IceError> {
    let stream = bundled_stream(webrtcbin)?;
    with_agent(webrtcbin, |agent| {
        // SAFETY: `agent` is a live NiceAgent (see `with_agent`); libnice allocates the two
        // strings it returns, which are copied and freed here.
        unsafe {
            if nice_agent_restart_stream(agent, stream) == 0 {
                return Err(IceError::RestartRefused(stream));
            }
            let mut ufrag: *mut c_char = std::ptr::null_mut();
            let mut pwd: *mut c_char = std::ptr::null_mut();
            if nice_agent_get_local_credentials(agent, stream, &mut ufrag, &mut pwd) == 0
                || ufrag.is_null()
                || pwd.is_null()
            {
                glib::ffi::g_free(ufrag as *mut c_void);
                glib::ffi::g_free(pwd as *mut c_void);
                return Err(IceError::RestartRefused(stream));
            }
            let credentials = Credentials {
                ufrag: CStr::from_ptr(ufrag).to_string_lossy().into_owned(),
                pwd: CStr::from_ptr(pwd).to_string_lossy().into_owned(),
            };
            glib::ffi::g_free(ufrag as *mut c_void);
            glib::ffi::g_free(pwd as *mut c_void);
            Ok(credentials)
        }
    })?
}

/// Gives libnice the peer's credentials after a restart. webrtcbin passes them on when a
/// negotiation completes too; this makes sure the checks use them from the first one.
pub fn set_remote_credentials(
    webrtcbin: &gst::Element,
    remote: &Credentials,
) -> Result<(), IceError> {
    let stream = bundled_stream(webrtcbin)?;
    let (Ok(ufrag), Ok(pwd)) = (
        CString::new(remote.ufrag.as_str()),
        CString::new(remote.pwd.as_str()),
    ) else {
        return Err(IceError::RestartRefused(stream));
    };
    with_agent(webrtcbin, |agent| {
        // SAFETY: `agent` is a live NiceAgent (see `with_agent`); libnice copies the strings.
        let ok = unsafe {
            nice_agent_set_remote_credentials(agent, stream, ufrag.as_ptr(), pwd.as_ptr())
        };
        if ok == 0 {
            Err(IceError::RestartRefused(stream))
        } else {
            Ok(())
        }
    })?
}

/// The libnice stream id of webrtcbin's transport; an error unless every transceiver shares
/// one (max-bundle, what webrtcd and browsers negotiate).
fn bundled_stream(webrtcbin: &gst::Element) -> Result<u32, IceError> {
    let mut streams: Vec<u32> = Vec::new();
    for index in 0.. {
        let transceiver = webrtcbin
            .emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&index]);
        let Some(transceiver) = transceiver else {
            break;
        };
        let id = transceiver
            .sender()
            .and_then(|s| s.transport())
            .map(|dtls| dtls.property::<glib::Object>("transport"))
            .filter(|ice| ice.find_property("stream").is_some())
            .map(|ice| ice.property::<glib::Object>("stream"))
            .filter(|stream| stream.find_property("stream-id").is_some())
            .map(|stream| stream.property::<u32>("stream-id"));
        if let Some(id) = id
            && !streams.contains(&id)
        {
            streams.push(id);
        }
    }
    match streams.as_slice() {
        [one] => Ok(*one),
        other => Err(IceError::NotBundled(other.len())),
    }
}

/// Runs `f` with webrtcbin's NiceAgent, referenced for the whole call.
fn with_agent<T>(
    webrtcbin: &gst::Element,
    f: impl FnOnce(*mut c_void) -> T,
) -> Result<T, IceError> {
    let ice: glib::Object = webrtcbin.property("ice-agent");
    if ice.find_property("agent").is_none() {
        return Err(IceError::NoAgent);
    }
    let agent: glib::Object = ice.property("agent");
    let raw = ToGlibPtr::<*mut glib::gobject_ffi::GObject>::to_glib_none(&agent).0 as *mut c_void;
    let result = f(raw);
    drop(agent);
    drop(ice);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_has_upnp_and_tcp_off_and_paces_checks_faster() {
        gst::init().unwrap();
        let webrtcbin = gst::ElementFactory::make("webrtcbin").build().unwrap();
        let ice = || -> glib::Object { webrtcbin.property("ice-agent") };
        let agent = || -> glib::Object { ice().property("agent") };
        // libnice's and webrtcbin's defaults.
        assert!(agent().property::<bool>("upnp"));
        assert!(ice().property::<bool>("ice-tcp"));
        assert_eq!(agent().property::<u32>("stun-pacing-timer"), 20);
        configure_agent(&webrtcbin);
        assert!(!agent().property::<bool>("upnp"));
        assert!(!ice().property::<bool>("ice-tcp"));
        assert_eq!(
            agent().property::<u32>("stun-pacing-timer"),
            CHECK_PACING_MS
        );
    }
}
