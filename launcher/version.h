// `dgr --version`: the versions of dgr and of the libraries it was built with and runs on.
#pragma once

#include <string>

namespace dgr::launcher {
std::string version_report();
// The same on one line, entries separated by "; " (for every rank's start-up line).
std::string version_line();
}
