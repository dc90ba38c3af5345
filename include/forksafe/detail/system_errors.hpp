// SPDX-License-Identifier: MIT
//
// forksafe/detail/system_errors.hpp: how forksafe reports a failed system
// call: a std::system_error carrying errno and a sentence of context.

#ifndef FORKSAFE_DETAIL_SYSTEM_ERRORS_HPP
#define FORKSAFE_DETAIL_SYSTEM_ERRORS_HPP

#include "config.hpp"

#include <system_error> // std::system_error

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Throws std::system_error carrying `err` and a sentence of context.
[[noreturn]] inline void throw_errno(int err, const char* context) {
  throw std::system_error(err, std::generic_category(), context);
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_SYSTEM_ERRORS_HPP
