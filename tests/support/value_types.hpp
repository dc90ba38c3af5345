// SPDX-License-Identifier: MIT
//
// tests/support/value_types.hpp: user types for the tests of what crosses a
// process boundary: structs that list their members (and ways of getting
// that wrong), a custom allocator, a stateful comparator.

#ifndef FORKSAFE_TEST_VALUE_TYPES_HPP
#define FORKSAFE_TEST_VALUE_TYPES_HPP

#include <cstddef>  // std::size_t
#include <future>   // a member that cannot cross
#include <map>      // a listed member
#include <memory>   // std::allocator
#include <optional> // a listed member
#include <string>   // listed members
#include <tuple>    // std::tie
#include <vector>   // listed members

namespace forksafe_test {

/// Opts in with one line; every member crosses.
struct listed_row {
  int id = 0;
  std::string name;
  std::vector<double> scores;
  std::map<std::string, int> counts;
  std::optional<std::vector<std::string>> tags;
  auto forksafe_members() { return std::tie(id, name, scores, counts, tags); }
  friend bool operator==(const listed_row&, const listed_row&) = default;
};

/// Holds a std::string and lists nothing: rejected.
struct unlisted_row {
  int id = 0;
  std::string name;
};

/// Lists a member that cannot cross.
struct listed_row_with_a_future {
  int id = 0;
  std::future<int> pending;
  auto forksafe_members() { return std::tie(id, pending); }
};

/// Inherits its base's list, which would leave `extra` behind: rejected.
struct derived_from_listed_row : listed_row {
  std::string extra;
};

/// A list of const references: nothing to assign on the reading side.
struct listed_row_const_members {
  std::string name;
  auto forksafe_members() const { return std::tie(name); }
};

/// Lists no member at all: crosses, and arrives default-constructed.
struct listed_nothing {
  auto forksafe_members() { return std::tie(); }
  friend bool operator==(const listed_nothing&, const listed_nothing&) = default;
};

template <class T>
struct custom_allocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = custom_allocator<U>;
  };
};

struct stateful_less {
  int direction = 1;
  bool operator()(int a, int b) const { return direction * a < direction * b; }
};

} // namespace forksafe_test

#endif // FORKSAFE_TEST_VALUE_TYPES_HPP
