//! `recvmmsg`/`sendmmsg`: up to [`BATCH`] datagrams per system call in each direction.
//!
//! Why unsafe code: neither std nor socket2 wraps these calls, and on the benchmark machine
//! the kernel's per-call cost (entry, socket lookup, wakeups) dominates an answer, so batching
//! under load is what lets the server keep up with NSD, which does the same. The unsafe part
//! is confined to this file: fixed arrays owned by [`Batch`], pointers into them that live only
//! for the duration of each call, and reads of the kernel-written socket addresses by family.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest query read (longer datagrams are cut and then fail to parse: FORMERR or drop).
const QUERY_BUFFER: usize = 4096;

/// Receive buffers and the peers' addresses of one batch, reused for every call.
pub struct Batch {
    buffers: Vec<[u8; QUERY_BUFFER]>,
    addresses: Vec<libc::sockaddr_storage>,
    address_lengths: Vec<libc::socklen_t>,
    lengths: Vec<usize>,
    count: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            buffers: vec![[0u8; QUERY_BUFFER]; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addresses: vec![unsafe { std::mem::zeroed() }; BATCH],
            address_lengths: vec![0; BATCH],
            lengths: vec![0; BATCH],
            count: 0,
        }
    }

    /// Waits for at least one datagram (bounded by the socket's read timeout), then takes
    /// whatever else is already queued, up to [`BATCH`]. Returns how many were received.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // SAFETY: zeroed iovec/mmsghdr are valid (null pointers, zero lengths) and are filled
        // below before use.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for index in 0..BATCH {
            // Indexes, not iterators: two arrays and two fields of self are tied together here.
            iovecs[index] = libc::iovec { iov_base: self.buffers[index].as_mut_ptr().cast(), iov_len: QUERY_BUFFER };
            let header = &mut headers[index].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut self.addresses[index]).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut iovecs[index];
            header.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `headers` points into `iovecs`, `self.buffers` or
        // `self.addresses`, all alive and unaliased for the duration of the call; the lengths
        // given are the real sizes of those buffers.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = received as usize;
        for (index, header) in headers.iter().enumerate().take(self.count) {
            self.lengths[index] = (header.msg_len as usize).min(QUERY_BUFFER);
            self.address_lengths[index] = header.msg_hdr.msg_namelen;
        }
        Ok(self.count)
    }

    /// Datagram `index` of the last receive and who sent it.
    pub fn datagram(&self, index: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.buffers[index][..self.lengths[index]], socket_address(&self.addresses[index]))
    }

    /// Sends `answers[index]` back to the sender of datagram `index`, for every index with an
    /// answer (`None`: nothing to send). Datagrams the kernel refuses are skipped.
    pub fn send(&mut self, socket: &UdpSocket, answers: &[Option<&[u8]>]) {
        // SAFETY: as in `receive`.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut count = 0;
        for (index, answer) in answers.iter().enumerate().take(self.count) {
            let Some(answer) = answer else { continue };
            iovecs[count] = libc::iovec { iov_base: answer.as_ptr().cast_mut().cast(), iov_len: answer.len() };
            let header = &mut headers[count].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut self.addresses[index]).cast();
            header.msg_namelen = self.address_lengths[index];
            header.msg_iov = &mut iovecs[count];
            header.msg_iovlen = 1;
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point into `iovecs`, `answers` (borrowed for this
            // whole function) and `self.addresses`; sendmmsg only reads through them.
            let result = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), headers[sent..].as_mut_ptr(), (count - sent) as libc::c_uint, 0)
            };
            if result <= 0 {
                // The first remaining datagram failed (e.g. an ICMP-unreachable peer): skip it.
                sent += 1;
            } else {
                sent += result as usize;
            }
        }
    }
}

/// Reads a kernel-written socket address by its family.
fn socket_address(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET), which fits in storage.
            let address: &libc::sockaddr_in = unsafe { &*std::ptr::from_ref(storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(address.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6), which fits in storage.
            let address: &libc::sockaddr_in6 = unsafe { &*std::ptr::from_ref(storage).cast() };
            let ip = Ipv6Addr::from(address.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(address.sin6_port),
                address.sin6_flowinfo,
                address.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Steers the `SO_REUSEPORT` group `socket` belongs to (every socket bound to its address and
/// port): `true` hands every datagram to the group's first socket (a classic BPF program that
/// returns index 0), `false` detaches it, back to the kernel's spreading by flow hash.
pub fn steer_to_first(socket: &UdpSocket, first: bool) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let result = if first {
        // BPF_RET | BPF_K, k = 0: "socket 0 of the group".
        let mut program = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }];
        let fprog = libc::sock_fprog { len: 1, filter: program.as_mut_ptr() };
        // `fprog` points to `program`, alive until the call returns; the kernel copies it.
        set_socket_option(fd, libc::SO_ATTACH_REUSEPORT_CBPF, &fprog)
    } else {
        set_socket_option(fd, libc::SO_DETACH_REUSEPORT_BPF, &(0 as libc::c_int))
    };
    match result {
        // Detaching when nothing is attached.
        Err(error) if !first && error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// `setsockopt(fd, SOL_SOCKET, name, value)`: the kernel reads `size_of::<T>()` bytes of
/// `value` during the call and keeps nothing of it.
fn set_socket_option<T>(fd: std::os::fd::RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` for the duration of the call, and the length
    // passed is exactly its size; the option's own pointers (if any) are the caller's to keep
    // alive, which they are for the call.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Asks the CPU to start loading the cache line at `address` (a hint: it never faults, whatever
/// the address, and changes no memory).
#[cfg(target_arch = "x86_64")]
pub fn prefetch(address: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: PREFETCHT0 is part of SSE, which every x86-64 CPU has; it reads nothing
    // architecturally and cannot fault.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast()) }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::steer_to_first;

    fn member(address: SocketAddr) -> UdpSocket {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&address.into()).unwrap();
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        socket
    }

    fn drain(socket: &UdpSocket) -> usize {
        let mut buffer = [0u8; 16];
        std::iter::from_fn(|| socket.recv_from(&mut buffer).ok()).count()
    }

    /// Steered, every flow goes to the group's first socket; detached (twice: the second finds
    /// nothing attached), the kernel spreads flows over both again.
    #[test]
    fn steering_hands_every_flow_to_the_first_socket_and_detaching_spreads_them_again() {
        let first = member("127.0.0.1:0".parse().unwrap());
        let address = first.local_addr().unwrap();
        let second = member(address);
        let send_from_many_ports = || {
            for _ in 0..64 {
                UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"q", address).unwrap();
            }
        };
        steer_to_first(&first, true).unwrap();
        send_from_many_ports();
        assert_eq!((drain(&first), drain(&second)), (64, 0));
        steer_to_first(&first, false).unwrap();
        steer_to_first(&first, false).unwrap();
        send_from_many_ports();
        let (to_first, to_second) = (drain(&first), drain(&second));
        assert_eq!(to_first + to_second, 64);
        assert!(to_second > 0, "64 flows, none to the second socket: not spread");
    }
}
