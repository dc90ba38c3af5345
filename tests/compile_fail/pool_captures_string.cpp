// SPDX-License-Identifier: MIT
// A pool task whose lambda captures a std::string. A closure's captures
// cannot be listed, so the closure cannot cross to a worker; the first error
// line must name submit, the callable and the remedy: pass the string as an
// argument.
#include <forksafe/process_pool.hpp>

#include <string> // the capture

int main() {
  forksafe::process_pool pool(1);
  const std::string name = "worker";
  auto r = pool.submit([name] { return name.size(); });
  return static_cast<int>(r.get());
}
