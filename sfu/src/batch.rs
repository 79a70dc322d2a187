//! `recvmmsg`/`sendmmsg` on the media port: up to [`BATCH`] datagrams per system call in each
//! direction.
//!
//! Why unsafe code: neither std, tokio nor socket2 wraps these calls. Measured on the
//! conference benchmark (`scripts/bench-conference.sh`), the kernel's per-call cost (entry,
//! socket lookup, wakeups) was most of the SFU's CPU per packet: one `recvfrom` per packet in a
//! reader task that then woke the hub, and one `sendto` per packet forwarded. The unsafe part
//! is confined to this file: buffers owned by [`Receiver`] and [`Sender`], pointers into them
//! that live only for the duration of each call, and addresses converted through socket2.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams per system call.
pub(crate) const BATCH: usize = 32;
/// Largest datagram read; WebRTC keeps packets under the path MTU, a longer one is cut (and
/// then fails SRTP authentication or STUN parsing, so it is dropped).
pub(crate) const MAX_DATAGRAM: usize = 2000;

/// Receive buffers and the senders' addresses of one batch, reused for every call.
pub(crate) struct Receiver {
    buffers: Vec<[u8; MAX_DATAGRAM]>,
    addresses: Vec<libc::sockaddr_storage>,
    address_lengths: Vec<libc::socklen_t>,
    lengths: Vec<usize>,
    count: usize,
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            buffers: vec![[0u8; MAX_DATAGRAM]; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addresses: vec![unsafe { std::mem::zeroed() }; BATCH],
            address_lengths: vec![0; BATCH],
            lengths: vec![0; BATCH],
            count: 0,
        }
    }

    /// Takes what is queued on the (non-blocking) socket, up to [`BATCH`] datagrams, without
    /// waiting: `WouldBlock` when nothing is. Returns how many were received.
    pub fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        // SAFETY: zeroed iovec/mmsghdr are valid (null pointers, zero lengths) and are filled
        // below before use.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for index in 0..BATCH {
            // Indexes, not iterators: two arrays and two fields of self are tied together here.
            iovecs[index] = libc::iovec { iov_base: self.buffers[index].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
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
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = received as usize;
        for (index, header) in headers.iter().enumerate().take(self.count) {
            self.lengths[index] = (header.msg_len as usize).min(MAX_DATAGRAM);
            self.address_lengths[index] = header.msg_hdr.msg_namelen;
        }
        Ok(self.count)
    }

    /// Datagram `index` of the last receive and who sent it (`None`: not an IP address).
    pub fn datagram(&self, index: usize) -> (&[u8], Option<SocketAddr>) {
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: SockAddrStorage is a transparent wrapper of sockaddr_storage.
        unsafe { *storage.view_as::<libc::sockaddr_storage>() = self.addresses[index] };
        let length = self.address_lengths[index].min(storage.size_of());
        // SAFETY: the kernel initialised the first `length` bytes of the address (at most the
        // storage's size).
        let address = unsafe { SockAddr::new(storage, length) };
        (&self.buffers[index][..self.lengths[index]], address.as_socket())
    }
}

/// Datagrams waiting to go out of one socket: the hub queues what the sessions produce and
/// sends them with one `sendmmsg` per [`BATCH`].
pub(crate) struct Sender {
    queue: Vec<(SockAddr, Vec<u8>)>,
}

impl Sender {
    pub fn new() -> Sender {
        Sender { queue: Vec::with_capacity(BATCH) }
    }

    /// Queues one datagram; sends the batch when it is full.
    pub fn push(&mut self, socket: &impl AsRawFd, destination: SocketAddr, data: Vec<u8>) {
        self.queue.push((SockAddr::from(destination), data));
        if self.queue.len() >= BATCH {
            self.send(socket);
        }
    }

    /// Sends everything queued. A datagram the kernel refuses (a full socket buffer, an
    /// unreachable peer) is dropped, as UDP would.
    pub fn send(&mut self, socket: &impl AsRawFd) {
        let count = self.queue.len().min(BATCH);
        if count == 0 {
            return;
        }
        // SAFETY: as in `Receiver::receive`.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (index, (destination, data)) in self.queue.iter().enumerate().take(count) {
            iovecs[index] = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
            let header = &mut headers[index].msg_hdr;
            header.msg_name = destination.as_ptr().cast_mut().cast();
            header.msg_namelen = destination.len();
            header.msg_iov = &mut iovecs[index];
            header.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point into `iovecs` and `self.queue`, neither of
            // which changes during the call; sendmmsg only reads through them.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers[sent..count].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if result <= 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    // The socket buffer is full: the rest of this batch is dropped.
                    break;
                }
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::trace!(%error, "media send failed; datagram dropped");
                    sent += 1;
                }
            } else {
                sent += result as usize;
            }
        }
        self.queue.drain(..count);
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_whole_with_its_addresses() {
        let receiver_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver_socket.set_nonblocking(true).unwrap();
        let sockets: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let destination = receiver_socket.local_addr().unwrap();
        // 40 datagrams from three sockets: more than one batch each way, sizes 0 to MAX.
        let mut senders: Vec<Sender> = (0..3).map(|_| Sender::new()).collect();
        let mut expected = Vec::new();
        for index in 0..40usize {
            let from = index % 3;
            let size = [0, 1, 1200, MAX_DATAGRAM][index % 4];
            let data: Vec<u8> = (0..size).map(|byte| (byte + index) as u8).collect();
            expected.push((sockets[from].local_addr().unwrap(), data.clone()));
            senders[from].push(&sockets[from], destination, data);
        }
        for (sender, socket) in senders.iter_mut().zip(&sockets) {
            sender.send(socket);
            assert!(sender.queue.is_empty(), "everything queued was sent");
        }
        let mut receiver = Receiver::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < expected.len() && std::time::Instant::now() < deadline {
            match receiver.receive(&receiver_socket) {
                Ok(count) => {
                    assert!(count <= BATCH);
                    for index in 0..count {
                        let (data, from) = receiver.datagram(index);
                        got.push((from.unwrap(), data.to_vec()));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(error) => panic!("receive failed: {error}"),
            }
        }
        // Per sending socket the order holds; across sockets it need not.
        for socket in &sockets {
            let address = socket.local_addr().unwrap();
            let sent: Vec<_> = expected.iter().filter(|(from, _)| *from == address).collect();
            let received: Vec<_> = got.iter().filter(|(from, _)| *from == address).collect();
            assert_eq!(sent, received, "datagrams from {address}");
        }
        assert_eq!(got.len(), expected.len());
        assert!(matches!(receiver.receive(&receiver_socket), Err(error) if error.kind() == io::ErrorKind::WouldBlock));
    }

    #[test]
    fn a_datagram_longer_than_the_buffer_is_cut_not_overrun() {
        let receiver_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&vec![7u8; MAX_DATAGRAM + 500], receiver_socket.local_addr().unwrap()).unwrap();
        receiver_socket.set_nonblocking(true).unwrap();
        let mut receiver = Receiver::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let count = loop {
            match receiver.receive(&receiver_socket) {
                Ok(count) => break count,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(error) => panic!("nothing received: {error}"),
            }
        };
        assert_eq!(count, 1);
        let (data, _) = receiver.datagram(0);
        assert_eq!(data.len(), MAX_DATAGRAM);
    }
}
