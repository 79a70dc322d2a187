//! The responses the server sends, signed with the allocation's key where there is one.

use std::net::SocketAddr;

use crate::allocation::Allocation;
use crate::message::{Builder, Class, Message, attribute, method};
use crate::{Client, Now, Output};

/// The Allocate success response.
pub(crate) fn allocated(now: Now, client: Client, allocation: &Allocation, relay: SocketAddr) -> Vec<u8> {
    let lifetime = allocation.expires.saturating_duration_since(now.instant).as_secs() as u32;
    let mut builder = Builder::new(method::ALLOCATE, Class::Success, allocation.transaction);
    builder
        .xor_address(attribute::XOR_RELAYED_ADDRESS, relay)
        .u32(attribute::LIFETIME, lifetime)
        .xor_address(attribute::XOR_MAPPED_ADDRESS, client.remote)
        .integrity(&allocation.key);
    builder.fingerprint()
}

pub(crate) fn success(client: Client, request: &Message<'_>, key: &[u8; 16], out: &mut Vec<Output>) {
    let mut builder = Builder::new(request.method, Class::Success, request.transaction);
    builder.integrity(key);
    out.push(Output::ToClient { client, data: builder.fingerprint() });
}

pub(crate) fn error(
    client: Client,
    request: &Message<'_>,
    code: u16,
    reason: &str,
    key: Option<&[u8; 16]>,
    out: &mut Vec<Output>,
) {
    let mut builder = Builder::new(request.method, Class::Error, request.transaction);
    builder.error(code, reason);
    if let Some(key) = key {
        builder.integrity(key);
    }
    out.push(Output::ToClient { client, data: builder.fingerprint() });
}

pub(crate) fn unknown_attributes(
    client: Client,
    request: &Message<'_>,
    unknown: &[u16],
    key: &[u8; 16],
    out: &mut Vec<Output>,
) {
    let mut builder = Builder::new(request.method, Class::Error, request.transaction);
    let list: Vec<u8> = unknown.iter().flat_map(|kind| kind.to_be_bytes()).collect();
    builder.error(420, "Unknown Attribute").attribute(attribute::UNKNOWN_ATTRIBUTES, &list).integrity(key);
    out.push(Output::ToClient { client, data: builder.fingerprint() });
}
