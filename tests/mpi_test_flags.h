// Fault-injection flags of the MPI gtest main (see mpi_gtest_main.cpp).
#pragma once
extern int g_dgr_fail_on_rank;  // this rank fails a check (-1: none)
extern int g_dgr_exit_on_rank;  // this rank exits abruptly in the middle of the tests (-1: none)
