# Runs tests/comm_fault_probe under mpiexec and checks that the job ends non-zero, within MAX_SECONDS,
# with output matching every regex of EXPECT (separated by @@). Used as `cmake -P` by CTest:
#   -DMPIEXEC=... -DMPIEXEC_FLAGS="--oversubscribe ..." -DNP=3 -DPROBE=<exe> -DPROBE_ARGS="--mode stall ..."
#   -DMAX_SECONDS=13 -DEXPECT="regex1@@regex2"
foreach(var MPIEXEC NP PROBE MAX_SECONDS EXPECT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "comm_fault_check.cmake: -D${var}=... is required")
  endif()
endforeach()
separate_arguments(mpiexec_flags UNIX_COMMAND "${MPIEXEC_FLAGS}")
separate_arguments(probe_args UNIX_COMMAND "${PROBE_ARGS}")

string(TIMESTAMP start_s "%s" UTC)
execute_process(COMMAND ${MPIEXEC} ${mpiexec_flags} -n ${NP} ${PROBE} ${probe_args}
                RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE output TIMEOUT 120)
string(TIMESTAMP end_s "%s" UTC)
math(EXPR elapsed_s "${end_s} - ${start_s}")
message("---- output of the job (exit status '${rc}', ${elapsed_s} s) ----\n${output}---- end of output ----")

set(failures "")
if(rc STREQUAL "0")
  list(APPEND failures "the job exited 0; a rank that stalled or died must end it non-zero")
endif()
if(elapsed_s GREATER MAX_SECONDS)
  list(APPEND failures "the job took ${elapsed_s} s, more than ${MAX_SECONDS} s (timeout + 10 s)")
endif()
string(REPLACE "@@" ";" expectations "${EXPECT}")
foreach(regex IN LISTS expectations)
  if(NOT output MATCHES "${regex}")
    list(APPEND failures "the output does not match '${regex}'")
  endif()
endforeach()
if(failures)
  list(JOIN failures "\n  " text)
  message(FATAL_ERROR "comm fault check failed:\n  ${text}")
endif()
message("comm fault check passed: exit status '${rc}' after ${elapsed_s} s (limit ${MAX_SECONDS} s)")
