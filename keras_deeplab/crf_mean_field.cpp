// Mean-field inference of the fully connected CRF (Kraehenbuehl & Koltun, NIPS 2011) on the permutohedral
// lattice (Adams, Baek & Davis, Eurographics 2010), on all the cores it is given.
//
// The model is the one of Kraehenbuehl's densecrf library (so of DeepLab v1/v2 and pydensecrf): a Potts
// compatibility, a smoothness kernel over (x, y) / pos_xy_std and an appearance kernel over (x, y) / bi_xy_std,
// (r, g, b) / bi_rgb_std, each filtered on its own lattice with symmetric normalisation (K' = D^-1/2 K D^-1/2,
// D the lattice filter of ones, the point itself included). One iteration: Q <- softmax(-unary + sum_k w_k K'_k Q).
// The lattice arithmetic is that library's, so the two agree to float rounding.
//
// How the work is laid out differs:
// - each worker thread builds the lattice for its share of the pixels in a table of its own; the tables are
//   then merged, so only the vertices (not every pixel's d+1 corners) go through one serial table; a corner
//   shared with the pixel to the left or above is not looked up at all;
// - the pixels are split between the workers (bands of rows, visited in tiles); each splats its pixels into a
//   buffer of its own, and the blur's first axis reads the sum of the buffers, so no two threads write one vertex;
// - one pass over the pixels slices both kernels, adds the unary, takes the soft-max and splats the new Q for
//   the next iteration: Q itself is never stored;
// - D^-1/2 is folded into the per-corner weights; the class axis is padded to a multiple of 8 floats and every
//   inner loop works on whole 8-float vectors; exp is a vector polynomial, not libm's scalar call;
// - the working memory is kept for the next call (page faults of fresh memory cost up to a third of a call);
// - the per-iteration loops (crf_mean_field_kernels.h) are compiled twice, for AVX2+FMA and for the x86-64
//   baseline, and the CPU picks one at run time.
//
// Compilers: GCC and Clang get their vector extensions and builtins (KERAS_DEEPLAB_GNU); any other compiler
// (MSVC), or any compiler given -DKERAS_DEEPLAB_STANDARD_CPP (how the tests build that path with GCC and Clang),
// gets standard C++20 only: 8-float structs whose loops the optimiser may vectorise, no prefetch, baseline loops.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(KERAS_DEEPLAB_STANDARD_CPP)
#define KERAS_DEEPLAB_GNU 1
#define KD_ALWAYS_INLINE __attribute__((always_inline)) inline
#define KD_PREFETCH(address) __builtin_prefetch(address)
#else
#include <bit>
#define KD_ALWAYS_INLINE inline
#define KD_PREFETCH(address) static_cast<void>(address)
#endif

namespace {

constexpr int kMaxDims = 16;          // feature dimensions a lattice supports (the CRF uses 2 and 5)
constexpr int kMaxClassLanes = 1024;  // classes, padded to a multiple of 8
constexpr int kMaxCorners = 2 * (kMaxDims + 1);  // simplex corners of the two kernels together
constexpr int kMaxThreads = 64;
constexpr int64_t kTileRows = 16;  // the mean-field update visits each worker's pixels in tiles of this size
constexpr int64_t kTileColumns = 32;
// Bounds on the parameters, the same as crf.py's MAX_FEATURE, MAX_WEIGHT and MAX_ITERATIONS (see there): a
// feature (position or colour over its std) of at most kMaxFeature keeps the elevated coordinates within float
// precision and far from int overflow. mean_field refuses parameters past them; embed() clamps besides, so that
// no input, however it got here, makes an index leave its array.
constexpr double kMaxFeature = 65536.0;
constexpr double kMaxWeight = 1e4;
constexpr int kMaxIterations = 1000;
// embed()'s second guard: the nearest sublattice coordinate is clamped to this before the float-to-int
// conversion (times d + 1 <= 17 it stays well inside int32, as do the keys and their blur neighbours).
constexpr float kMaxNearest = 16777216.0f;

// This worker's share of [0, n) when `workers` split it.
inline std::pair<int64_t, int64_t> share(int64_t n, int worker, int workers) {
  return {n * worker / workers, n * (worker + 1) / workers};
}

// Runs body(worker, workers, barrier) on up to `threads` workers, this thread being worker 0. If the system
// refuses a thread, the work is split between those that started. An exception in a worker is rethrown here
// (bodies that use the barrier must not throw).
template <class Body>
void parallel(int threads, Body&& body) {
  std::mutex mutex;
  std::condition_variable started;
  bool go = false;
  int workers = 1;
  std::optional<std::barrier<>> sync;
  std::exception_ptr failure;
  auto run = [&](int worker) {
    try {
      body(worker, workers, *sync);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(threads - 1);
    for (int worker = 1; worker < threads; ++worker) {
      pool.emplace_back([&, worker] {
        std::unique_lock<std::mutex> lock(mutex);
        started.wait(lock, [&] { return go; });
        lock.unlock();
        run(worker);
      });
    }
  } catch (const std::system_error&) {
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    workers = static_cast<int>(pool.size()) + 1;
    sync.emplace(workers);
    go = true;
  }
  started.notify_all();
  run(0);
  for (auto& thread : pool) thread.join();
  if (failure) std::rethrow_exception(failure);
}

// Whether two lattice keys of d coordinates are equal (a loop the compiler inlines, not a memcmp call).
inline bool same_key(const int32_t* a, const int32_t* b, int d) {
  for (int i = 0; i < d; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Open-addressing table from integer lattice keys (d coordinates) to dense ids 0..size-1. Each slot holds
// the id and a copy of the key, so that a probe reads one place in memory.
class KeyTable {
 public:
  // Empties the table for keys of `dims` coordinates, keeping its memory.
  void reset(int dims) {
    dims_ = dims;
    keys_.clear();
    rehash(std::max<size_t>(capacity_, 1 << 12));
  }

  uint64_t hash(const int32_t* key) const {
    uint64_t h = 0;
    for (int i = 0; i < dims_; ++i) h = (h ^ static_cast<uint32_t>(key[i])) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 33;  // MurmurHash3's finaliser: the low bits, which pick the slot, depend on every coordinate
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 33);
  }

  // Starts loading the slot a key with this hash probes first (lookups are memory-bound: issuing several
  // before using any lets them overlap).
  void prefetch(uint64_t hash) const { KD_PREFETCH(&slots_[(hash & mask_) * (dims_ + 1)]); }

  int32_t insert(const int32_t* key, uint64_t hash) {
    if (2 * (size() + 1) > static_cast<int64_t>(capacity_)) rehash(2 * capacity_);
    for (uint64_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
      int32_t* entry = &slots_[slot * (dims_ + 1)];
      if (entry[0] < 0) {
        entry[0] = static_cast<int32_t>(size());
        std::copy(key, key + dims_, entry + 1);
        keys_.insert(keys_.end(), key, key + dims_);
        return entry[0];
      }
      if (same_key(entry + 1, key, dims_)) return entry[0];
    }
  }

  int32_t find(const int32_t* key, uint64_t hash) const {
    for (uint64_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
      const int32_t* entry = &slots_[slot * (dims_ + 1)];
      if (entry[0] < 0) return -1;
      if (same_key(entry + 1, key, dims_)) return entry[0];
    }
  }

  int64_t size() const { return static_cast<int64_t>(keys_.size()) / dims_; }
  const int32_t* key(int64_t id) const { return &keys_[id * dims_]; }

 private:
  void rehash(size_t capacity) {
    capacity_ = capacity;
    mask_ = capacity - 1;
    slots_.assign(capacity * (dims_ + 1), -1);
    for (int64_t id = 0; id < size(); ++id) {
      uint64_t slot = hash(key(id)) & mask_;
      while (slots_[slot * (dims_ + 1)] >= 0) slot = (slot + 1) & mask_;
      slots_[slot * (dims_ + 1)] = static_cast<int32_t>(id);
      std::copy(key(id), key(id) + dims_, &slots_[slot * (dims_ + 1) + 1]);
    }
  }

  int dims_ = 1;
  size_t capacity_ = 0;
  uint64_t mask_ = 0;
  std::vector<int32_t> slots_;  // capacity * (1 + dims): id (-1: empty) and key
  std::vector<int32_t> keys_;   // size * dims, by id
};

// A permutohedral lattice over the points of one kernel, with what its filter needs. Vertex ids are 1-based;
// 0 stands for a vertex that does not exist (a blur neighbour off the lattice), whose rows stay zero.
struct Lattice {
  int dims = 0;
  int64_t vertices = 0;
  std::vector<int32_t> vertex;    // points * (dims + 1): the vertices of each point's enclosing simplex
  std::vector<float> weight;      // points * (dims + 1): barycentric weight (* D^-1/2 of the point, once built)
  std::vector<int32_t> neighbour; // (dims + 1) * (vertices + 1) * 2: the blur's two neighbours on each axis
  float alpha = 1.0f;             // the slice's scale, 1 / (1 + 2^-d) (Adams et al.)
};

// Where a point lies in the lattice: the d+1 vertices (keys, d coordinates each) of its enclosing simplex and
// its barycentric weights (Adams et al. 2010, section 3.1 and p.10; the arithmetic of densecrf's SSE path).
void embed(const float* feature, int d, const float* scale, const int* canonical, int32_t* keys, float* weights) {
  float elevated[kMaxDims + 1];
  int remainder0[kMaxDims + 1];
  int rank[kMaxDims + 1];
  float barycentric[kMaxDims + 2];
  float sum_so_far = 0;
  for (int j = d; j > 0; --j) {
    const float scaled = feature[j - 1] * scale[j - 1];
    elevated[j] = sum_so_far - j * scaled;
    sum_so_far += scaled;
  }
  elevated[0] = sum_so_far;
  // The nearest point of the zero-remainder sublattice, coordinate by coordinate (rounding half to even by
  // adding and subtracting 1.5 * 2^23, as densecrf's SSE conversion does, without a libm call).
  const float down = 1.0f / (d + 1);
  int sum = 0;
  for (int i = 0; i <= d; ++i) {
    float t = elevated[i] * down;
    t = t < kMaxNearest ? t : kMaxNearest;  // NaN too: no conversion past int's range (undefined behaviour)
    t = t > -kMaxNearest ? t : -kMaxNearest;
    const int nearest = static_cast<int>((t + 12582912.0f) - 12582912.0f);
    remainder0[i] = nearest * (d + 1);
    sum += nearest;
  }
  // The simplex: the rank of each coordinate's residual; then bring the point back onto the plane.
  std::fill(rank, rank + d + 1, 0);
  for (int i = 0; i < d; ++i) {
    const float di = elevated[i] - remainder0[i];
    for (int j = i + 1; j <= d; ++j) {
      const int less = di < elevated[j] - remainder0[j];  // without a branch: the outcome is a coin toss
      rank[i] += less;
      rank[j] += 1 - less;
    }
  }
  for (int i = 0; i <= d; ++i) {
    rank[i] += sum;
    if (rank[i] < 0) {
      rank[i] += d + 1;
      remainder0[i] += d + 1;
    } else if (rank[i] > d) {
      rank[i] -= d + 1;
      remainder0[i] -= d + 1;
    }
    // In range whenever the coordinates are (within kMaxFeature); past it float rounding can leave the sum of
    // the nearest points far from 0, and the rank would index past barycentric and canonical.
    rank[i] = std::min(std::max(rank[i], 0), d);
  }
  std::fill(barycentric, barycentric + d + 2, 0.0f);
  for (int i = 0; i <= d; ++i) {
    const float v = (elevated[i] - remainder0[i]) * down;
    barycentric[d - rank[i]] += v;
    barycentric[d - rank[i] + 1] -= v;
  }
  barycentric[0] += 1.0f + barycentric[d + 1];
  for (int r = 0; r <= d; ++r) {
    for (int i = 0; i < d; ++i) keys[r * d + i] = remainder0[i] + canonical[r * (d + 1) + rank[i]];
    weights[r] = barycentric[r];
  }
}

// The memory of a kernel's lattice and its filtering, kept between calls (see `Workspace`): reusing it spares
// the page faults of fresh allocations, which cost as much as a third of a call on small machines.
struct KernelMemory {
  Lattice lattice;
  std::vector<KeyTable> tables;               // one per worker
  std::vector<std::vector<int32_t>> renumber; // per worker: its table's ids in the merged table
  std::vector<float> ones, blurred_ones;      // the filter of ones (the normalisation)
  std::vector<std::vector<float>> splats;     // one splat buffer per worker
  std::vector<float> first, second;           // the blur's ping-pong
};

// The lattice of one kernel over an image: features (x, y) / xy_std, with (r, g, b) / rgb_std when d = 5, as
// densecrf's DenseCRF2D; simplices, blur neighbours and the normalised weights.
void build(KernelMemory& memory, const uint8_t* image, int64_t width, int64_t points, int d, float xy_std,
           float rgb_std, int threads) {
  Lattice& lattice = memory.lattice;
  lattice.dims = d;
  lattice.alpha = 1.0f / (1.0f + std::pow(2.0f, -static_cast<float>(d)));
  const int corners = d + 1;
  float scale[kMaxDims];
  const float inverse_std = std::sqrt(2.0f / 3.0f) * (d + 1);  // the filter's expected std (Adams et al. p.6)
  for (int i = 0; i < d; ++i) scale[i] = inverse_std / std::sqrt(static_cast<float>((i + 2) * (i + 1)));
  int canonical[(kMaxDims + 1) * (kMaxDims + 1)];
  for (int i = 0; i <= d; ++i) {
    for (int j = 0; j <= d - i; ++j) canonical[i * (d + 1) + j] = i;
    for (int j = d - i + 1; j <= d; ++j) canonical[i * (d + 1) + j] = i - (d + 1);
  }

  // Each worker: its points' simplices, with vertex ids of a table of its own. Corner r of a simplex is always
  // the vertex of remainder r, so a vertex shared with the pixel to the left or above is at the same corner:
  // those two are compared first (a row of keys is kept), which spares most table lookups.
  lattice.vertex.resize(static_cast<size_t>(points) * corners);
  lattice.weight.resize(static_cast<size_t>(points) * corners);
  if (static_cast<int>(memory.tables.size()) < threads) memory.tables.resize(threads);
  memory.renumber.resize(threads);
  std::vector<int64_t> table_start(threads + 1, points);  // the points of table t: [start[t], start[t + 1])
  parallel(threads, [&](int worker, int workers, std::barrier<>&) {
    const auto [begin, end] = share(points, worker, workers);
    table_start[worker] = begin;
    std::vector<int32_t> row(static_cast<size_t>(width) * corners * d);  // the keys of the last pixel of each column
    int32_t key[(kMaxDims + 1) * kMaxDims];
    float feature[kMaxDims];
    KeyTable& table = memory.tables[worker];
    table.reset(d);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t x = p % width;
      feature[0] = static_cast<float>(x) / xy_std;
      feature[1] = static_cast<float>(p / width) / xy_std;
      for (int c = 2; c < d; ++c) feature[c] = image[p * 3 + c - 2] / rgb_std;
      embed(feature, d, scale, canonical, key, &lattice.weight[p * corners]);
      int32_t* ids = &lattice.vertex[p * corners];
      const bool has_left = x > 0 && p - 1 >= begin;
      const bool has_above = p - width >= begin;
      uint64_t hashes[kMaxDims + 1];
      int missing = 0;  // corners left for the table, by bit
      for (int r = 0; r < corners; ++r) {
        const int32_t* k = &key[r * d];
        if (has_left && same_key(k, &row[((x - 1) * corners + r) * d], d)) {
          ids[r] = ids[r - corners];
        } else if (has_above && same_key(k, &row[(x * corners + r) * d], d)) {
          ids[r] = lattice.vertex[(p - width) * corners + r];
        } else {
          hashes[r] = table.hash(k);
          table.prefetch(hashes[r]);
          missing |= 1 << r;
        }
      }
      for (int r = 0; r < corners; ++r) {
        if (missing & (1 << r)) ids[r] = table.insert(&key[r * d], hashes[r]);
      }
      std::copy(key, key + corners * d, &row[x * corners * d]);
    }
  });
  // One table: worker 0's, with the other workers' vertices added; their ids are then renumbered.
  KeyTable& table = memory.tables[0];
  constexpr int64_t kBatch = 16;  // merged keys whose probes are started together
  uint64_t batch_hashes[kBatch];
  for (int t = 1; t < threads; ++t) {
    const int64_t count = table_start[t] < table_start[t + 1] ? memory.tables[t].size() : 0;
    memory.renumber[t].resize(count);
    for (int64_t first = 0; first < count; first += kBatch) {
      const int64_t last = std::min(first + kBatch, count);
      for (int64_t id = first; id < last; ++id) {
        batch_hashes[id - first] = table.hash(memory.tables[t].key(id));
        table.prefetch(batch_hashes[id - first]);
      }
      for (int64_t id = first; id < last; ++id) {
        memory.renumber[t][id] = table.insert(memory.tables[t].key(id), batch_hashes[id - first]);
      }
    }
  }
  const int64_t m = table.size();
  lattice.vertices = m;
  parallel(threads, [&](int worker, int workers, std::barrier<>&) {
    for (int t = worker; t < threads; t += workers) {
      for (int64_t e = table_start[t] * corners; e < table_start[t + 1] * corners; ++e) {
        lattice.vertex[e] = (t == 0 ? lattice.vertex[e] : memory.renumber[t][lattice.vertex[e]]) + 1;
      }
    }
  });

  // Blur neighbours on each of the d+1 lattice axes: the key -/+ 1 in every coordinate but the axis's, which
  // moves by +/- d (the last axis has no stored coordinate).
  lattice.neighbour.assign(static_cast<size_t>(corners) * (m + 1) * 2, 0);
  parallel(threads, [&](int worker, int workers, std::barrier<>&) {
    const auto [begin, end] = share(m, worker, workers);
    int32_t keys[2 * (kMaxDims + 1)][kMaxDims];
    uint64_t hashes[2 * (kMaxDims + 1)];
    for (int64_t v = begin; v < end; ++v) {
      const int32_t* key = table.key(v);
      for (int axis = 0; axis <= d; ++axis) {
        int32_t* n1 = keys[2 * axis];
        int32_t* n2 = keys[2 * axis + 1];
        for (int k = 0; k < d; ++k) {
          n1[k] = key[k] - 1;
          n2[k] = key[k] + 1;
        }
        if (axis < d) {
          n1[axis] = key[axis] + d;
          n2[axis] = key[axis] - d;
        }
      }
      for (int i = 0; i < 2 * corners; ++i) {  // all the probes first, so that their loads overlap
        hashes[i] = table.hash(keys[i]);
        table.prefetch(hashes[i]);
      }
      for (int axis = 0; axis <= d; ++axis) {
        int32_t* out = &lattice.neighbour[(axis * (m + 1) + v + 1) * 2];
        out[0] = table.find(keys[2 * axis], hashes[2 * axis]) + 1;
        out[1] = table.find(keys[2 * axis + 1], hashes[2 * axis + 1]) + 1;
      }
    }
  });

  // D: the filter of ones (splat, blur, slice on one channel); then weight = barycentric * D^-1/2.
  std::vector<float>& a = memory.ones;
  std::vector<float>& b = memory.blurred_ones;
  a.assign(m + 1, 0.0f);
  b.assign(m + 1, 0.0f);
  for (int64_t e = 0; e < points * corners; ++e) a[lattice.vertex[e]] += lattice.weight[e];
  for (int axis = 0; axis <= d; ++axis) {
    const int32_t* neighbour = &lattice.neighbour[axis * (m + 1) * 2];
    for (int64_t v = 1; v <= m; ++v) b[v] = a[v] + 0.5f * (a[neighbour[2 * v]] + a[neighbour[2 * v + 1]]);
    std::swap(a, b);
  }
  parallel(threads, [&](int worker, int workers, std::barrier<>&) {
    const auto [begin, end] = share(points, worker, workers);
    for (int64_t p = begin; p < end; ++p) {
      float* weight = &lattice.weight[p * corners];
      const int32_t* vertex = &lattice.vertex[p * corners];
      float total = 0.0f;
      for (int r = 0; r < corners; ++r) total += weight[r] * a[vertex[r]];
      const float norm = 1.0f / std::sqrt(lattice.alpha * total + 1e-20f);
      for (int r = 0; r < corners; ++r) weight[r] *= norm;
    }
  });
}

#if defined(__x86_64__) && defined(KERAS_DEEPLAB_GNU)
#define KERAS_DEEPLAB_AVX2 1
#if defined(__clang__)  // Clang ignores GCC's target pragmas
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
#include "crf_mean_field_kernels.h"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
namespace baseline {
#include "crf_mean_field_kernels.h"
}  // namespace baseline

struct Kernels {
  decltype(&baseline::blur_splats) blur_splats;
  decltype(&baseline::blur) blur;
  decltype(&baseline::start) start;
  decltype(&baseline::update) update;
};

Kernels kernels_for_this_cpu([[maybe_unused]] bool portable) {
#ifdef KERAS_DEEPLAB_AVX2
  if (!portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {avx2::blur_splats, avx2::blur, avx2::start, avx2::update};
  }
#endif
  return {baseline::blur_splats, baseline::blur, baseline::start, baseline::update};
}

struct Settings {
  int64_t height, width;
  int classes, iterations, threads, portable;
  float bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std, probability_floor;
};

// Everything a call allocates in proportion to the image, kept for the next call.
struct Workspace {
  KernelMemory kernels[2];
  std::vector<float> log_probability;
};

std::mutex cached_workspace_mutex;
std::unique_ptr<Workspace> cached_workspace;

void mean_field(const uint8_t* image, const float* probabilities, float* out, const Settings& s, Workspace& w) {
  const int64_t n = s.height * s.width;
  const int classes = s.classes;
  const int lanes = (classes + 7) / 8 * 8;
  const int threads = s.threads;

  // The kernels: the smoothness one over (x, y), then the appearance one over (x, y, r, g, b).
  KernelMemory* memory[2];
  float scales[2];
  int kernels = 0;
  auto add_kernel = [&](int d, float xy_std, float rgb_std, float weight) {
    if (s.iterations == 0 || weight <= 0) return;
    memory[kernels] = &w.kernels[kernels];
    build(*memory[kernels], image, s.width, n, d, xy_std, rgb_std, threads);
    scales[kernels] = weight * memory[kernels]->lattice.alpha;
    ++kernels;
  };
  add_kernel(2, s.pos_xy_std, 1.0f, s.pos_w);
  add_kernel(5, s.bi_xy_std, s.bi_rgb_std, s.bi_w);
  const Lattice* lattice[2];
  float* splats[2][kMaxThreads];
  int max_dims = 0;
  for (int k = 0; k < kernels; ++k) {
    lattice[k] = &memory[k]->lattice;
    max_dims = std::max(max_dims, lattice[k]->dims);
    // A splat buffer per worker, which starts at zero, and two for the blur, which writes every row but row 0
    // (the vertex that does not exist), so only that row is zeroed.
    const size_t rows = static_cast<size_t>(lattice[k]->vertices + 1) * lanes;
    memory[k]->splats.resize(threads);
    for (int worker = 0; worker < threads; ++worker) {
      memory[k]->splats[worker].assign(rows, 0.0f);
      splats[k][worker] = memory[k]->splats[worker].data();
    }
    for (std::vector<float>* blurred : {&memory[k]->first, &memory[k]->second}) {
      blurred->resize(rows);
      std::fill_n(blurred->data(), lanes, 0.0f);
    }
  }
  w.log_probability.resize(static_cast<size_t>(n) * lanes);

  const Kernels run = kernels_for_this_cpu(s.portable);
  parallel(threads, [&](int worker, int workers, std::barrier<>& sync) {
    float* mine[2];  // this worker's splat buffers
    float* from[2];
    float* to[2];
    for (int k = 0; k < kernels; ++k) mine[k] = splats[k][worker];
    run.start(lattice, mine, kernels, probabilities, s.probability_floor, w.log_probability.data(), out,
              s.iterations == 0, classes, lanes, s.height, s.width, worker, workers);
    for (int it = 0; it < s.iterations; ++it) {
      sync.arrive_and_wait();
      for (int k = 0; k < kernels; ++k) {
        from[k] = memory[k]->first.data();
        to[k] = memory[k]->second.data();
        run.blur_splats(*lattice[k], splats[k], threads, from[k], lanes, worker, workers);
      }
      sync.arrive_and_wait();
      for (int k = 0; k < kernels; ++k) {
        // Nothing reads the splat buffers again before the update: clear this worker's share of them now.
        const auto [begin, end] = share(lattice[k]->vertices, worker, workers);
        for (int b = 0; b < threads; ++b) {
          std::fill(splats[k][b] + (begin + 1) * lanes, splats[k][b] + (end + 1) * lanes, 0.0f);
        }
      }
      for (int axis = 1; axis <= max_dims; ++axis) {
        for (int k = 0; k < kernels; ++k) {
          if (axis <= lattice[k]->dims) run.blur(*lattice[k], axis, from[k], to[k], lanes, worker, workers);
        }
        sync.arrive_and_wait();
        for (int k = 0; k < kernels; ++k) {
          if (axis <= lattice[k]->dims) std::swap(from[k], to[k]);
        }
      }
      run.update(lattice, from, scales, mine, kernels, w.log_probability.data(), out, it + 1 == s.iterations,
                 classes, lanes, s.height, s.width, worker, workers);
    }
  });
}

// mean_field on the cached workspace, or on a fresh one while another call holds it.
void mean_field(const uint8_t* image, const float* probabilities, float* out, const Settings& s) {
  std::unique_lock<std::mutex> lock(cached_workspace_mutex, std::try_to_lock);
  if (lock.owns_lock()) {
    if (!cached_workspace) cached_workspace = std::make_unique<Workspace>();
    mean_field(image, probabilities, out, s, *cached_workspace);
  } else {
    Workspace fresh;
    mean_field(image, probabilities, out, s, fresh);
  }
}

const char* instruction_set() {
#ifdef KERAS_DEEPLAB_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "baseline";
}

PyObject* py_mean_field(PyObject*, PyObject* args, PyObject* keywords) {
  static const char* names[] = {"image", "probabilities", "out", "height", "width", "classes", "iterations",
                                "threads", "bi_w", "bi_xy_std", "bi_rgb_std", "pos_w", "pos_xy_std",
                                "probability_floor", "portable", nullptr};
  Py_buffer image{}, probabilities{}, out{};
  Settings s{};
  long long height = 0, width = 0;
  if (!PyArg_ParseTupleAndKeywords(args, keywords, "y*y*w*LLiiiffffff|p", const_cast<char**>(names), &image,
                                   &probabilities, &out, &height, &width, &s.classes, &s.iterations, &s.threads,
                                   &s.bi_w, &s.bi_xy_std, &s.bi_rgb_std, &s.pos_w, &s.pos_xy_std,
                                   &s.probability_floor, &s.portable)) {
    return nullptr;
  }
  s.height = height;
  s.width = width;
  const char* problem = nullptr;
  const bool sides = s.height >= 1 && s.width >= 1 && s.height <= INT32_MAX && s.width <= INT32_MAX;
  const int64_t n = sides ? s.height * s.width : 0;
  // The largest feature a std makes (position / std, colour / std), in double; the 1e-6 allows for the float32
  // rounding of a std that crf.py accepted at its bound.
  const double side = static_cast<double>(std::max(s.height, s.width) - 1);
  auto too_fine = [](double extent, float std) { return !(extent / std <= kMaxFeature * (1 + 1e-6)); };
  auto bad_weight = [](float weight) { return !(weight >= 0 && weight <= kMaxWeight); };  // NaN too
  if (!sides || s.classes < 1 || s.classes > kMaxClassLanes || s.iterations < 0 || s.iterations > kMaxIterations ||
      s.threads < 1 || s.threads > kMaxThreads) {
    problem = "mean_field: height, width, classes (1-1024), iterations (0-1000) or threads (1-64) out of range";
  } else if (n >= INT32_MAX / 6) {
    problem = "mean_field: the image has too many pixels for the lattice's 32-bit indices";
  } else if (image.len != n * 3 || probabilities.len != n * s.classes * 4 || out.len != n * s.classes * 4) {
    problem = "mean_field: buffer sizes do not match height x width x 3 bytes and height x width x classes floats";
  } else if (!(s.bi_xy_std > 0 && s.bi_rgb_std > 0 && s.pos_xy_std > 0 && std::isfinite(s.bi_xy_std) &&
               std::isfinite(s.bi_rgb_std) && std::isfinite(s.pos_xy_std))) {
    problem = "mean_field: the standard deviations must be finite and positive";
  } else if (too_fine(side, s.bi_xy_std) || too_fine(side, s.pos_xy_std) || too_fine(255.0, s.bi_rgb_std)) {
    problem = "mean_field: a std is so small that a feature (position or colour / std) passes 65536";
  } else if (bad_weight(s.bi_w) || bad_weight(s.pos_w)) {
    problem = "mean_field: the weights must be from 0 to 1e4";
  } else if (!(s.probability_floor > 0 && s.probability_floor <= 1)) {
    problem = "mean_field: probability_floor must be in (0, 1]";
  }
  bool out_of_memory = false;
  std::string failure;
  if (problem == nullptr) {
    Py_BEGIN_ALLOW_THREADS;
    try {
      mean_field(static_cast<const uint8_t*>(image.buf), static_cast<const float*>(probabilities.buf),
                 static_cast<float*>(out.buf), s);
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    } catch (const std::exception& error) {
      failure = std::string("mean_field: ") + error.what();
    }
    Py_END_ALLOW_THREADS;
  }
  PyBuffer_Release(&image);
  PyBuffer_Release(&probabilities);
  PyBuffer_Release(&out);
  if (problem != nullptr) {
    PyErr_SetString(PyExc_ValueError, problem);
    return nullptr;
  }
  if (out_of_memory) return PyErr_NoMemory();
  if (!failure.empty()) {
    PyErr_SetString(PyExc_RuntimeError, failure.c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* py_instruction_set(PyObject*, PyObject*) { return PyUnicode_FromString(instruction_set()); }

PyObject* py_release_memory(PyObject*, PyObject*) {
  std::unique_ptr<Workspace> released;
  Py_BEGIN_ALLOW_THREADS;
  std::lock_guard<std::mutex> lock(cached_workspace_mutex);
  released = std::move(cached_workspace);
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"mean_field", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(py_mean_field)),
     METH_VARARGS | METH_KEYWORDS,
     "mean_field(image, probabilities, out, height, width, classes, iterations, threads, bi_w, bi_xy_std, "
     "bi_rgb_std, pos_w, pos_xy_std, probability_floor, portable=False): the fully connected CRF's mean field, "
     "written to `out`. image: uint8 RGB (height*width*3 bytes); probabilities, out: float32 "
     "(height*width*classes), C order. portable: use the baseline loops even where AVX2 is there."},
    {"instruction_set", py_instruction_set, METH_NOARGS,
     "instruction_set(): 'avx2' or 'baseline', the loops mean_field runs on this CPU."},
    {"release_memory", py_release_memory, METH_NOARGS,
     "release_memory(): frees the working memory mean_field keeps between calls (0.3-1 KB per pixel)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_crf_mean_field", nullptr, -1, methods, nullptr, nullptr, nullptr, nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__crf_mean_field() { return PyModule_Create(&module); }
