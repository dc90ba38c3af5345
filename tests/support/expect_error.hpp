// SPDX-License-Identifier: MIT
//
// tests/support/expect_error.hpp: "get() must throw a child_error of this
// kind", in one helper for tests/ and tests/peers/ alike.
//
//   const auto e = forksafe_test::error_of(r);
//   REQUIRE(e);                // get() threw a child_error
//   CHECK(e->timed_out());     // of this kind
//
// error_of() uses no doctest assertion, so a run_in_child child may call it
// too and report through its exit code.

#ifndef FORKSAFE_TESTS_SUPPORT_EXPECT_ERROR_HPP
#define FORKSAFE_TESTS_SUPPORT_EXPECT_ERROR_HPP

#include <forksafe/process_result.hpp> // child_error, what process_result::get() throws

#include <optional> // the error, or nothing
#include <ostream>  // doctest's StringMaker

#include <doctest/doctest.h>

namespace forksafe_test {

/// The child_error that `result.get()` throws, or nothing if it returned.
/// Any other exception passes through. get() is called on an lvalue (a
/// temporary handle included), so a large result is never copied out.
template <class Result>
std::optional<forksafe::child_error> error_of(Result&& result) {
  try {
    (void)result.get();
  } catch (const forksafe::child_error& e) {
    return e;
  }
  return std::nullopt;
}

} // namespace forksafe_test

namespace doctest {
// REQUIRE(e) that fails says why: get() returned instead of throwing.
template <>
struct StringMaker<std::optional<forksafe::child_error>> {
  static String convert(const std::optional<forksafe::child_error>& e) {
    return e ? String(e->what()) : String("no child_error: get() returned");
  }
};
} // namespace doctest

#endif // FORKSAFE_TESTS_SUPPORT_EXPECT_ERROR_HPP
