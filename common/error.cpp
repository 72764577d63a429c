// Formatting helpers behind the DGR_CHECK macros.
#include "common/error.h"

#include <mpi.h>

#include <cstring>

#include "common/world.h"

namespace dgr::detail {

std::string where(const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  return fmt::format("{}:{}: ", base ? base + 1 : file, line);
}

std::string rank_host_suffix() {
  const World* world = World::current();
  if (world == nullptr || world->size() <= 1) return "";
  return fmt::format(" [rank {} of {} on {}]", world->rank(), world->size(), world->host());
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text, static_cast<size_t>(length));
}

}  // namespace dgr::detail
