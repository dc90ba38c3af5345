// SPDX-License-Identifier: MIT
//
// forksafe/detail/fd_passing.hpp: passing a descriptor to another process
// over a unix socket (SCM_RIGHTS): how a process_pool hands a worker the
// memfd a large result is built in.

#ifndef FORKSAFE_DETAIL_FD_PASSING_HPP
#define FORKSAFE_DETAIL_FD_PASSING_HPP

#include "config.hpp"

#include <array>   // the control data
#include <cerrno>  // EINTR
#include <cstring> // std::memcpy

#include <sys/socket.h> // sendmsg, recvmsg, CMSG_*
#include <sys/uio.h>    // iovec
#include <unistd.h>     // close

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// One byte with room for one descriptor in its control data: the message
/// send_fd and receive_fd exchange.
struct fd_message {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
  msghdr msg{};
  fd_message() noexcept {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
  }
  fd_message(const fd_message&) = delete; // msg points into itself
  fd_message& operator=(const fd_message&) = delete;
};

/// Sends `fd` over a unix socket, with a one-byte `tag`.
inline bool send_fd(int socket, int fd, unsigned char tag = 0) noexcept {
  fd_message m;
  m.byte = static_cast<char>(tag);
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(socket, &m.msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == 1;
}

/// Receives a descriptor sent with send_fd; -1 on failure. `flags`:
/// MSG_DONTWAIT not to wait for one. `tag`, if given, receives its tag (a
/// message without a descriptor yields -1 and its tag).
inline int receive_fd(int socket, int flags = 0, unsigned char* tag = nullptr) noexcept {
  fd_message m;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &m.msg, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  if (n == 1 && tag != nullptr) *tag = static_cast<unsigned char>(m.byte);
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  if (n != 1 || c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
      c->cmsg_len != CMSG_LEN(sizeof(int))) {
    return -1;
  }
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

/// The descriptor sent with `tag`, if it is there (never waits), or -1: one
/// left over from an earlier message (a task in a worker that sent
/// descriptors of its own) is closed and skipped, a bounded number of times.
inline int receive_tagged_fd(int socket, unsigned char tag) noexcept {
  for (int tries = 0; tries < 64; ++tries) {
    unsigned char got = 0;
    const int fd = receive_fd(socket, MSG_DONTWAIT, &got);
    if (fd >= 0 && got == tag) return fd;
    if (fd >= 0) {
      ::close(fd);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    }
  }
  return -1;
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_FD_PASSING_HPP
