// SPDX-License-Identifier: MIT
//
// forksafe/detail/intrusive_ring.hpp: a circular doubly-linked list threaded
// through its nodes (any type with `prev` and `next` pointers to its own
// type), with a sentinel node as its head: linking costs no allocation, O(1).
// The fork registry's entries and the live quiesce locks are kept this way.

#ifndef FORKSAFE_DETAIL_INTRUSIVE_RING_HPP
#define FORKSAFE_DETAIL_INTRUSIVE_RING_HPP

#include "config.hpp"

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Makes `head` an empty ring.
template <class Node>
void ring_init(Node& head) noexcept {
  head.prev = head.next = &head;
}

/// Links `n` right after `pos` (after the head: first; before it: last).
template <class Node>
void ring_insert_after(Node& pos, Node& n) noexcept {
  n.prev = &pos;
  n.next = pos.next;
  pos.next->prev = &n;
  pos.next = &n;
}

/// Links `n` last, just before the head.
template <class Node>
void ring_push_back(Node& head, Node& n) noexcept {
  ring_insert_after(*head.prev, n);
}

/// Unlinks `n`; its links are cleared.
template <class Node>
void ring_unlink(Node& n) noexcept {
  n.prev->next = n.next;
  n.next->prev = n.prev;
  n.prev = n.next = nullptr;
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_INTRUSIVE_RING_HPP
