// SPDX-License-Identifier: MIT
// A struct holding a std::string that did not list its members: the first
// error line must name fork_call, the struct and the remedy (forksafe_members).
#include <forksafe/fork_call.hpp>

#include <string> // the member that needs the struct to opt in

struct person {
  int age = 0;
  std::string name;
};

int main() {
  auto r = forksafe::fork_call([] { return person{42, "Ada"}; });
  return r.get().age;
}
