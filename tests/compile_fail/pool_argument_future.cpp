// SPDX-License-Identifier: MIT
// A pool task given a std::future as an argument: the first error line must
// name submit, the argument type and the remedy.
#include <forksafe/process_pool.hpp>

#include <future> // what is passed

int main() {
  forksafe::process_pool pool(1);
  std::promise<int> p;
  auto r = pool.submit([](std::future<int>& f) { return f.valid(); }, p.get_future());
  return r.get() ? 0 : 1;
}
