// Start-up checks of the launch environment: the MPI world must agree with what Slurm and Open MPI say
// (world size, rank, local rank), so a job started with the wrong srun/mpirun flags stops at once with a
// clear message instead of training on the wrong shards or hanging.
#pragma once

#include <map>
#include <string>

#include "common/world.h"

namespace dgr::launcher {

// Throws ConfigError naming every disagreement between `world` and the launcher variables in `env`
// (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK,
// OMPI_COMM_WORLD_LOCAL_RANK, and torchrun's WORLD_SIZE, RANK, LOCAL_RANK: copies started by torchrun are MPI
// singletons). Variables that are absent are not checked.
void check_launch_environment(const World& world, const std::map<std::string, std::string>& env);

// The launcher variables of this process's environment.
std::map<std::string, std::string> launch_environment();

// Intra-op threads for this rank: `requested` when > 0, else cores of the node / ranks on the node (>= 1).
int threads_per_rank(int requested, const World& world);

// The command line as typed (argv, each argument shell-quoted where needed), kept by main() before MPI
// start-up for the run directory's records.
void remember_command_line(int argc, char** argv);
const std::string& command_line();

}  // namespace dgr::launcher
