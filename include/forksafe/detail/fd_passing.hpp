// SPDX-License-Identifier: MIT
//
// forksafe/detail/fd_passing.hpp: passing a descriptor to another process
// over a unix socket (SCM_RIGHTS): how a process_pool hands a worker the
// memfd a large result is built in.

#ifndef FORKSAFE_DETAIL_FD_PASSING_HPP
#define FORKSAFE_DETAIL_FD_PASSING_HPP

#include "config.hpp"

#include <cerrno>  // EINTR
#include <cstring> // std::memcpy

#include <sys/socket.h> // sendmsg, recvmsg, CMSG_*
#include <sys/uio.h>    // iovec

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// One byte with room for one descriptor in its control data: the message
/// send_fd and receive_fd exchange.
struct fd_message {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  fd_message() noexcept {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  fd_message(const fd_message&) = delete; // msg points into itself
  fd_message& operator=(const fd_message&) = delete;
};

/// Sends `fd` over a unix socket.
inline bool send_fd(int socket, int fd) noexcept {
  fd_message m;
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

/// Receives a descriptor sent with send_fd; -1 on failure.
inline int receive_fd(int socket) noexcept {
  fd_message m;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &m.msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  if (n != 1 || c == nullptr || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_FD_PASSING_HPP
