//! libnice settings webrtcbin does not expose: restricting ICE host candidates to chosen local
//! addresses (`--ice-address`), and UPnP off.
//!
//! webrtcbin exposes its libnice agent (`ice-agent` → `agent`) but libnice has no Rust
//! bindings, so the one call we need is declared here. Once an address is added, libnice
//! gathers host candidates on the added addresses only — which is how tests stay on 127.0.0.1
//! (libnice otherwise ignores loopback interfaces entirely).

use std::ffi::{CString, c_char, c_int, c_void};
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
}

#[derive(Debug, thiserror::Error)]
pub enum IceError {
    #[error("webrtcbin has no libnice agent to restrict")]
    NoAgent,
    #[error("libnice refused local address {0}")]
    Refused(IpAddr),
}

/// Turns libnice's UPnP off. With it on (libnice's default) every call's agent looks for an
/// Internet gateway and asks it to forward ports to this device — a camera must not open
/// holes in the router it sits behind — and builds a GUPnP context per interface each call.
/// Set before gathering (the agent reads it when gathering starts).
pub fn disable_upnp(webrtcbin: &gst::Element) {
    let ice: glib::Object = webrtcbin.property("ice-agent");
    if ice.find_property("agent").is_none() {
        return;
    }
    let agent: glib::Object = ice.property("agent");
    if agent.find_property("upnp").is_some() {
        agent.set_property("upnp", false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upnp_is_off() {
        gst::init().unwrap();
        let webrtcbin = gst::ElementFactory::make("webrtcbin").build().unwrap();
        let agent = || -> glib::Object {
            let ice: glib::Object = webrtcbin.property("ice-agent");
            ice.property("agent")
        };
        assert!(agent().property::<bool>("upnp"), "libnice's default");
        disable_upnp(&webrtcbin);
        assert!(!agent().property::<bool>("upnp"));
    }
}
