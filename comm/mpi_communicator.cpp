// The "mpi" backend. Buffers of more than 2^30 elements go in pieces (MPI counts are int), every piece
// polled against the same deadline.
#include "comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "comm/reduce_kernels.h"
#include "common/error.h"

namespace dgr::comm::detail {
namespace {

constexpr size_t kMaxPieceCount = size_t{1} << 30;  // elements per MPI call

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return MPI_FLOAT;
    case DType::kBFloat16: return MPI_UINT16_T;  // moved as bits; reduced through fp32
    case DType::kInt32: return MPI_INT32_T;
    case DType::kInt64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

}  // namespace

MpiCommunicator::MpiCommunicator(const Options& options, const World& world) : MpiCommunicatorBase(options, world) {}

MpiCommunicator::~MpiCommunicator() {
  if (is_broken()) static_cast<void>(fp32_scratch_.release());
}

void MpiCommunicator::allreduce(Buffer buffer, ReduceOp op) {
  check_buffer(buffer, "the allreduce buffer");
  Call call = begin(OpKind::kAllreduce, buffer.dtype, buffer.num_bytes(), op == ReduceOp::kSum ? "sum" : "average");
  if (size_ == 1 || buffer.count == 0) {  // the identity, also for kAverage (a division by 1)
    call.done();
    return;
  }
  const int divisor = op == ReduceOp::kAverage ? size_ : 1;
  void* data = buffer.data;
  MPI_Datatype type = mpi_type(buffer.dtype);
  if (buffer.dtype == DType::kBFloat16) {
    if (fp32_scratch_count_ < buffer.count) {
      fp32_scratch_ = std::make_unique<float[]>(buffer.count);
      fp32_scratch_count_ = buffer.count;
    }
    bf16_to_float_n(static_cast<const uint16_t*>(buffer.data), fp32_scratch_.get(), buffer.count);
    data = fp32_scratch_.get();
    type = MPI_FLOAT;
  }
  const size_t element_bytes = buffer.dtype == DType::kBFloat16 ? sizeof(float) : dtype_bytes(buffer.dtype);
  for (size_t piece_begin = 0; piece_begin < buffer.count; piece_begin += kMaxPieceCount) {
    const size_t piece_count = std::min(kMaxPieceCount, buffer.count - piece_begin);
    MPI_Request request = MPI_REQUEST_NULL;
    DGR_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(data) + piece_begin * element_bytes,
                                 static_cast<int>(piece_count), type, MPI_SUM, comm_, &request));
    wait(call, &request);
  }
  if (buffer.dtype == DType::kBFloat16) {
    float_to_bf16_n(fp32_scratch_.get(), static_cast<uint16_t*>(buffer.data), buffer.count, divisor);
  } else {
    divide_in_place(buffer.data, buffer.count, buffer.dtype, divisor);
  }
  call.done();
}

void MpiCommunicator::broadcast(Buffer buffer, int root) {
  check_buffer(buffer, "the broadcast buffer");
  check_root(root, "broadcast");
  Call call = begin(OpKind::kBroadcast, buffer.dtype, buffer.num_bytes(), "");
  const size_t element_bytes = dtype_bytes(buffer.dtype);
  for (size_t piece_begin = 0; size_ > 1 && piece_begin < buffer.count; piece_begin += kMaxPieceCount) {
    const size_t piece_count = std::min(kMaxPieceCount, buffer.count - piece_begin);
    MPI_Request request = MPI_REQUEST_NULL;
    DGR_MPI_CHECK(MPI_Ibcast(static_cast<char*>(buffer.data) + piece_begin * element_bytes,
                             static_cast<int>(piece_count), mpi_type(buffer.dtype), root, comm_, &request));
    wait(call, &request);
  }
  call.done();
}

void MpiCommunicator::allgather(Buffer send, Buffer recv) {
  check_allgather_buffers(send, recv);
  DGR_CHECK_AS(CommError, send.count <= static_cast<size_t>(INT_MAX),
               "allgather of {} elements per rank is more than MPI's int count allows", send.count);
  Call call = begin(OpKind::kAllgather, send.dtype, send.num_bytes(), "");
  const size_t block_bytes = send.num_bytes();
  char* own_block = static_cast<char*>(recv.data) + static_cast<size_t>(rank_) * block_bytes;
  if (send.count > 0) {
    const bool in_place = send.data == own_block;
    if (size_ == 1) {
      if (!in_place) std::memcpy(own_block, send.data, block_bytes);
    } else {
      MPI_Request request = MPI_REQUEST_NULL;
      const int count = static_cast<int>(send.count);
      const MPI_Datatype type = mpi_type(send.dtype);
      DGR_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : send.data, count, type, recv.data, count, type, comm_,
                                   &request));
      wait(call, &request);
    }
  }
  call.done();
}

}  // namespace dgr::comm::detail
