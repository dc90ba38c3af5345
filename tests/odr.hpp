// SPDX-License-Identifier: MIT
// The ODR test: odr_a.cpp and odr_b.cpp each include every public header
// (A in the list's order, B in reverse) and are linked into one program. A
// definition in a header that is not inline fails to link; state that must
// be one per program but is one per translation unit shows up as two
// addresses or two values. Each TU defines the functions below with what it
// compiled from the headers, and the tests compare the two sides.

#ifndef FORKSAFE_TESTS_ODR_HPP
#define FORKSAFE_TESTS_ODR_HPP

#include <forksafe/fork_safe_mutex.hpp> // forksafe::fork_safe_mutex

#include <cstdint> // std::uint64_t

namespace odr {

// Defined in odr_a.cpp.
const void* registry_in_a();
std::uint64_t generation_in_a();
bool try_lock_in_a(forksafe::fork_safe_mutex& m);
void unlock_in_a(forksafe::fork_safe_mutex& m);

// Defined in odr_b.cpp.
const void* registry_in_b();
std::uint64_t generation_in_b();
bool try_lock_in_b(forksafe::fork_safe_mutex& m);
void unlock_in_b(forksafe::fork_safe_mutex& m);
// fork_call from TU B, whose child locks m through TU A and returns `value`.
int value_from_child_in_b(forksafe::fork_safe_mutex& m, int value);

} // namespace odr

#endif // FORKSAFE_TESTS_ODR_HPP
