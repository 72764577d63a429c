# Finds every dependency of dgr. A dependency that is required and missing stops the configure step with
# the command that installs it.
set(DGR_INSTALL_HINT "run scripts/install-deps.sh as root (Debian 12) to install it")

find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(spdlog CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3 CONFIG REQUIRED)
find_package(tomlplusplus CONFIG QUIET)
if(NOT tomlplusplus_FOUND)
  find_path(TOMLPP_INCLUDE_DIR toml++/toml.h)
  if(NOT TOMLPP_INCLUDE_DIR)
    message(FATAL_ERROR "toml++ not found: ${DGR_INSTALL_HINT} (package libtomlplusplus-dev)")
  endif()
endif()
find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp)
if(NOT CLI11_INCLUDE_DIR)
  message(FATAL_ERROR "CLI11 not found: ${DGR_INSTALL_HINT} (package libcli11-dev)")
endif()

# LibTorch: Debian's CPU build by default; a CUDA build with -DTorch_DIR=<prefix>/share/cmake/Torch.
# -DDGR_LIBTORCH_DIR=<a LibTorch 2.x tree, e.g. a PyPI torch wheel's torch/ directory>: its CPU libraries
# (torch_cpu, c10) and headers directly, without its CMake package (whose CUDA part needs a CUDA toolchain
# this CMake may not know): how dgr's CPU build and tests run against LibTorch 2.x (scripts/libtorch2-check.sh).
set(DGR_LIBTORCH_DIR "" CACHE PATH "A LibTorch 2.x tree (torch/ of a torch wheel): build against its CPU libraries")
if(DGR_LIBTORCH_DIR)
  find_library(DGR_TORCH_CPU_LIBRARY torch_cpu PATHS ${DGR_LIBTORCH_DIR}/lib NO_DEFAULT_PATH)
  find_library(DGR_C10_LIBRARY c10 PATHS ${DGR_LIBTORCH_DIR}/lib NO_DEFAULT_PATH)
  if(NOT DGR_TORCH_CPU_LIBRARY OR NOT DGR_C10_LIBRARY OR NOT EXISTS ${DGR_LIBTORCH_DIR}/include/torch/csrc/api/include)
    message(FATAL_ERROR "DGR_LIBTORCH_DIR=${DGR_LIBTORCH_DIR}: no lib/libtorch_cpu.so, lib/libc10.so or "
                        "include/torch/csrc/api/include there (give the torch/ directory of a torch package)")
  endif()
  # Its include/ bundles its own fmt (a newer major than Debian's, which spdlog is built with): a copy of the
  # tree as links, without fmt/, so every file sees one fmt.
  set(DGR_LIBTORCH_INCLUDE ${CMAKE_BINARY_DIR}/libtorch-include)
  file(REMOVE_RECURSE ${DGR_LIBTORCH_INCLUDE})
  file(MAKE_DIRECTORY ${DGR_LIBTORCH_INCLUDE})
  file(GLOB DGR_LIBTORCH_INCLUDE_ENTRIES RELATIVE ${DGR_LIBTORCH_DIR}/include ${DGR_LIBTORCH_DIR}/include/*)
  foreach(entry IN LISTS DGR_LIBTORCH_INCLUDE_ENTRIES)
    if(NOT entry STREQUAL "fmt")
      file(CREATE_LINK ${DGR_LIBTORCH_DIR}/include/${entry} ${DGR_LIBTORCH_INCLUDE}/${entry} SYMBOLIC)
    endif()
  endforeach()
  add_library(dgr_libtorch INTERFACE)
  target_include_directories(dgr_libtorch SYSTEM BEFORE INTERFACE ${DGR_LIBTORCH_INCLUDE}
                             ${DGR_LIBTORCH_DIR}/include/torch/csrc/api/include)
  target_link_libraries(dgr_libtorch INTERFACE ${DGR_TORCH_CPU_LIBRARY} ${DGR_C10_LIBRARY})
  set(TORCH_LIBRARIES dgr_libtorch)
  set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")  # the ABI of PyPI's LibTorch 2.x and of Debian
  message(STATUS "dgr: LibTorch from ${DGR_LIBTORCH_DIR} (CPU libraries: ${DGR_TORCH_CPU_LIBRARY})")
else()
  find_package(Torch REQUIRED)
endif()

# NCCL + CUDA (AUTO: on when both are found, e.g. under /usr/local/cuda).
set(DGR_HAVE_NCCL OFF)
if(NOT DGR_WITH_NCCL STREQUAL "OFF")
  if(NOT DEFINED CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{NCCL_HOME}/include)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{NCCL_HOME}/lib)
  endif()
  if(CUDAToolkit_FOUND AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(DGR_HAVE_NCCL ON)
    add_library(dgr_nccl INTERFACE)
    target_include_directories(dgr_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(dgr_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    message(STATUS "dgr: NCCL backend ON (${NCCL_LIBRARY}, CUDA ${CUDAToolkit_VERSION})")
  elseif(DGR_WITH_NCCL STREQUAL "ON")
    message(FATAL_ERROR "DGR_WITH_NCCL=ON but CUDA or NCCL was not found: set CUDAToolkit_ROOT and "
                        "NCCL_HOME, or configure with -DDGR_WITH_NCCL=OFF")
  else()
    message(STATUS "dgr: NCCL backend OFF (CUDA or NCCL not found)")
  endif()
endif()

# One interface target for the header-only config libraries.
add_library(dgr_config_deps INTERFACE)
if(tomlplusplus_FOUND)
  target_link_libraries(dgr_config_deps INTERFACE tomlplusplus::tomlplusplus)
else()
  target_include_directories(dgr_config_deps SYSTEM INTERFACE ${TOMLPP_INCLUDE_DIR})
endif()
target_include_directories(dgr_config_deps SYSTEM INTERFACE ${CLI11_INCLUDE_DIR})
