# Test helpers.
#
# dgr_add_gtest(NAME SOURCES... LIBS ...): one GoogleTest executable per module, discovered by CTest.
#
# dgr_add_mpi_test(NAME TARGET NP n [ARGS ...] [TIMEOUT s] [WILL_FAIL]): runs TARGET under
# `mpiexec -n n` as one CTest test with PROCESSORS n and a TIMEOUT. The test fails when any rank exits
# non-zero (mpiexec returns the first non-zero exit status and kills the other ranks), and the MPI gtest
# main (tests/mpi_gtest_main.cpp) also combines the results of all ranks so every rank reports a failure
# seen by one of them.
find_package(GTest REQUIRED)
find_program(DGR_MPIEXEC NAMES mpiexec mpirun HINTS ${MPIEXEC_EXECUTABLE})
if(NOT DGR_MPIEXEC)
  message(FATAL_ERROR "mpiexec not found: ${DGR_INSTALL_HINT} (package openmpi-bin)")
endif()
# Running as root (CI, containers) needs Open MPI's explicit consent; more ranks than cores needs
# --oversubscribe, and --bind-to none keeps several ranks from being pinned to core 0.
set(DGR_MPIEXEC_FLAGS --oversubscribe --bind-to none)
execute_process(COMMAND id -u OUTPUT_VARIABLE DGR_UID OUTPUT_STRIP_TRAILING_WHITESPACE)
if(DGR_UID STREQUAL "0")
  list(APPEND DGR_MPIEXEC_FLAGS --allow-run-as-root)
endif()

function(dgr_add_gtest name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest_main GTest::gmock dgr_warnings)
  target_compile_definitions(${name} PRIVATE DGR_BINARY="$<TARGET_FILE:dgr>"
                             DGR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
endfunction()

function(dgr_add_mpi_test name)
  cmake_parse_arguments(ARG "WILL_FAIL" "TARGET;NP;TIMEOUT" "ARGS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_test(NAME ${name}
           COMMAND ${DGR_MPIEXEC} ${DGR_MPIEXEC_FLAGS} -n ${ARG_NP} $<TARGET_FILE:${ARG_TARGET}> ${ARG_ARGS})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} PROCESSORS ${ARG_NP} LABELS mpi)
  if(ARG_WILL_FAIL)
    set_tests_properties(${name} PROPERTIES WILL_FAIL TRUE)
  endif()
endfunction()
