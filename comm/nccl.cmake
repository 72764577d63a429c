# The CUDA part of the NCCL backend: nvcc compiles comm/nccl_kernels.cu (the add/divide kernels of the
# send/recv ring) into one object that is added to dgr_comm. A custom command instead of CMake's CUDA
# language keeps enable_language(CUDA) out of the top-level project (every target linking dgr_comm would
# need it there). Include from comm/CMakeLists.txt inside if(DGR_HAVE_NCCL), after add_library(dgr_comm):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/nccl.cmake)
# GPU architectures: CMAKE_CUDA_ARCHITECTURES (numbers such as "90" or "80;90", or native/all/all-major);
# default 90 (H100/H200) plus its PTX, which newer GPUs compile at load time.
if(NOT TARGET dgr_comm)
  message(FATAL_ERROR "comm/nccl.cmake must be included after add_library(dgr_comm ...)")
endif()

get_filename_component(DGR_COMM_DIR "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
get_filename_component(DGR_SOURCE_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)

set(DGR_NVCC "${CUDAToolkit_NVCC_EXECUTABLE}")
if(NOT DGR_NVCC OR NOT EXISTS "${DGR_NVCC}")
  find_program(DGR_NVCC_FOUND nvcc HINTS ${CUDAToolkit_BIN_DIR} /usr/local/cuda/bin)
  set(DGR_NVCC "${DGR_NVCC_FOUND}")
endif()
if(NOT DGR_NVCC)
  message(FATAL_ERROR "the NCCL backend needs nvcc (CUDA ${CUDAToolkit_VERSION} found without it): install "
                      "the CUDA toolkit's compiler, set CUDAToolkit_ROOT to a full toolkit, or configure "
                      "with -DDGR_WITH_NCCL=OFF")
endif()

set(DGR_CUDA_ARCHS "${CMAKE_CUDA_ARCHITECTURES}")
if(NOT DGR_CUDA_ARCHS)
  set(DGR_CUDA_ARCHS 90)
endif()
set(DGR_NVCC_ARCH_FLAGS "")
if(DGR_CUDA_ARCHS MATCHES "^(native|all|all-major)$")
  list(APPEND DGR_NVCC_ARCH_FLAGS "-arch=${DGR_CUDA_ARCHS}")
else()
  set(DGR_CUDA_LAST_ARCH "")
  foreach(arch IN LISTS DGR_CUDA_ARCHS)
    string(REGEX REPLACE "-(real|virtual)$" "" number "${arch}")
    if(NOT number MATCHES "^[0-9]+[af]?$")
      message(FATAL_ERROR "CMAKE_CUDA_ARCHITECTURES entry '${arch}' is not understood (use e.g. 90 or 80;90)")
    endif()
    if(arch MATCHES "-virtual$")
      list(APPEND DGR_NVCC_ARCH_FLAGS "-gencode=arch=compute_${number},code=compute_${number}")
    else()
      list(APPEND DGR_NVCC_ARCH_FLAGS "-gencode=arch=compute_${number},code=sm_${number}")
    endif()
    set(DGR_CUDA_LAST_ARCH "${number}")
  endforeach()
  # PTX of the last architecture as well, so a newer GPU can still load the kernels.
  list(APPEND DGR_NVCC_ARCH_FLAGS "-gencode=arch=compute_${DGR_CUDA_LAST_ARCH},code=compute_${DGR_CUDA_LAST_ARCH}")
endif()

set(DGR_NCCL_KERNELS_OBJECT "${CMAKE_CURRENT_BINARY_DIR}/nccl_kernels.cu.o")
set(DGR_NVCC_BUILD_FLAGS -O3)
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  set(DGR_NVCC_BUILD_FLAGS -O0 -g)
endif()
add_custom_command(
  OUTPUT "${DGR_NCCL_KERNELS_OBJECT}"
  COMMAND "${DGR_NVCC}" -c "${DGR_COMM_DIR}/nccl_kernels.cu" -o "${DGR_NCCL_KERNELS_OBJECT}"
          -std=c++17 ${DGR_NVCC_BUILD_FLAGS} ${DGR_NVCC_ARCH_FLAGS} -ccbin "${CMAKE_CXX_COMPILER}"
          -Xcompiler=-fPIC "-I${DGR_SOURCE_ROOT}"
  DEPENDS "${DGR_COMM_DIR}/nccl_kernels.cu" "${DGR_COMM_DIR}/nccl_kernels.h"
          "${DGR_COMM_DIR}/communicator.h" "${DGR_SOURCE_ROOT}/common/world.h"
  COMMENT "nvcc: comm/nccl_kernels.cu (${DGR_CUDA_ARCHS})"
  VERBATIM)
set_source_files_properties("${DGR_NCCL_KERNELS_OBJECT}" PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
target_sources(dgr_comm PRIVATE "${DGR_NCCL_KERNELS_OBJECT}")
target_compile_definitions(dgr_comm PRIVATE DGR_NCCL_RING_KERNELS)
message(STATUS "dgr: NCCL ring kernels compiled by ${DGR_NVCC} for ${DGR_CUDA_ARCHS}")
