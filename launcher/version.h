// `dgr --version`: the versions of dgr and of the libraries it was built with and runs on.
#pragma once

#include <string>

namespace dgr::launcher {
std::string version_report();
}
