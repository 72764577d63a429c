# checkpoint_bench: checkpoint save throughput against fwrite of the same bytes, time training is blocked by
# an async save against a sync one, and load time. Included from bench/CMakeLists.txt.
add_executable(checkpoint_bench ${CMAKE_CURRENT_LIST_DIR}/checkpoint_bench.cpp)
target_link_libraries(checkpoint_bench PRIVATE dgr_checkpoints dgr_warnings)
