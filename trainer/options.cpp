// The two training stages' defaults (options.h).
#include "trainer/options.h"

namespace dgr::trainer {

TrainOptions generate_defaults() { return TrainOptions{}; }

TrainOptions distill_defaults() {
  TrainOptions o;
  o.out_dir = "runs/distill";
  o.schedule.epochs = 3;
  o.schedule.global_batch = 8;  // queries
  o.schedule.warmup = 0.1;
  o.optimizer.lr = 1e-4;
  o.optimizer.beta2 = 0.999;
  o.optimizer.weight_decay = 0;
  return o;
}

}  // namespace dgr::trainer
