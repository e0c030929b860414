// The mean field's per-iteration loops, included by crf_mean_field.cpp once per instruction set (inside a
// namespace, under a `#pragma GCC target` for the AVX2 copy). Rows are `lanes` floats, a multiple of 8, handled
// as 8-float vectors (two SSE registers on the baseline, one AVX register with AVX2).

#ifdef KERAS_DEEPLAB_GNU
// Vectors that may sit at any float's address and alias floats: loads and stores are plain unaligned moves.
typedef float vf __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(32), aligned(4), may_alias));

KD_ALWAYS_INLINE vf load(const float* from) { return *reinterpret_cast<const vf*>(from); }

KD_ALWAYS_INLINE void store(float* to, vf value) { *reinterpret_cast<vf*>(to) = value; }

KD_ALWAYS_INLINE vi bits_of(vf v) { return reinterpret_cast<vi>(v); }

KD_ALWAYS_INLINE vf floats_of(vi v) { return reinterpret_cast<vf>(v); }

KD_ALWAYS_INLINE vi rounded_to_int(vf v) { return __builtin_convertvector(v, vi); }
#else
// Standard C++: the same 8-lane vectors as structs, each operation a loop over the lanes.
struct vf {
  float lane[8];
  float operator[](int i) const { return lane[i]; }
};
struct vi {
  int32_t lane[8];
};

template <class V, class Operation>
KD_ALWAYS_INLINE V lanewise(Operation operation) {
  V result;
  for (int i = 0; i < 8; ++i) result.lane[i] = operation(i);
  return result;
}

KD_ALWAYS_INLINE vf load(const float* from) {
  vf v;
  std::memcpy(v.lane, from, sizeof v.lane);
  return v;
}
KD_ALWAYS_INLINE void store(float* to, vf value) { std::memcpy(to, value.lane, sizeof value.lane); }
KD_ALWAYS_INLINE vi bits_of(vf v) { return std::bit_cast<vi>(v); }
KD_ALWAYS_INLINE vf floats_of(vi v) { return std::bit_cast<vf>(v); }
KD_ALWAYS_INLINE vi rounded_to_int(vf v) {  // the values are whole numbers already
  return lanewise<vi>([&](int i) { return static_cast<int32_t>(v.lane[i]); });
}
KD_ALWAYS_INLINE vf operator+(vf a, vf b) { return lanewise<vf>([&](int i) { return a.lane[i] + b.lane[i]; }); }
KD_ALWAYS_INLINE vf operator-(vf a, vf b) { return lanewise<vf>([&](int i) { return a.lane[i] - b.lane[i]; }); }
KD_ALWAYS_INLINE vf operator*(vf a, vf b) { return lanewise<vf>([&](int i) { return a.lane[i] * b.lane[i]; }); }
KD_ALWAYS_INLINE vf operator+(vf a, float b) { return lanewise<vf>([&](int i) { return a.lane[i] + b; }); }
KD_ALWAYS_INLINE vf operator-(vf a, float b) { return lanewise<vf>([&](int i) { return a.lane[i] - b; }); }
KD_ALWAYS_INLINE vf operator*(vf a, float b) { return lanewise<vf>([&](int i) { return a.lane[i] * b; }); }
KD_ALWAYS_INLINE vf operator*(float a, vf b) { return b * a; }
KD_ALWAYS_INLINE vf& operator+=(vf& a, vf b) { return a = a + b; }
KD_ALWAYS_INLINE vf& operator*=(vf& a, float b) { return a = a * b; }
KD_ALWAYS_INLINE vi operator>(vf a, vf b) { return lanewise<vi>([&](int i) { return a.lane[i] > b.lane[i] ? -1 : 0; }); }
KD_ALWAYS_INLINE vi operator&(vi a, vi b) { return lanewise<vi>([&](int i) { return a.lane[i] & b.lane[i]; }); }
KD_ALWAYS_INLINE vi operator|(vi a, vi b) { return lanewise<vi>([&](int i) { return a.lane[i] | b.lane[i]; }); }
KD_ALWAYS_INLINE vi operator~(vi a) { return lanewise<vi>([&](int i) { return ~a.lane[i]; }); }
KD_ALWAYS_INLINE vi operator+(vi a, vi b) { return lanewise<vi>([&](int i) { return a.lane[i] + b.lane[i]; }); }
KD_ALWAYS_INLINE vi operator<<(vi a, int b) { return lanewise<vi>([&](int i) { return a.lane[i] << b; }); }
#endif

// The larger of a and b, lane by lane (bit masks rather than `?:` on vectors, which not every compiler has).
KD_ALWAYS_INLINE vf maximum(vf a, vf b) {
  const vi take_a = a > b;
  return floats_of((bits_of(a) & take_a) | (bits_of(b) & ~take_a));
}

// exp(x) for x <= 0 (the soft-max's shifted scores): Cody-Waite reduction by ln 2 and a degree-6 polynomial,
// relative error about 2e-7; 2^n is put into the exponent bits directly.
KD_ALWAYS_INLINE vf exp_nonpositive(vf x) {
  x = maximum(x, vf{} - 87.0f);
  const vf round = vf{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const vf n = (x * 1.44269504088896341f + round) - round;
  vf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vf p = vf{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return floats_of(bits_of(p) + (rounded_to_int(n) << 23));
}

// Calls visit(p) for each pixel of this worker's band of rows, tile by tile: the lattice rows the pixels of a
// tile slice and splat are fewer than those of whole image rows, and stay in cache.
template <class Visit>
KD_ALWAYS_INLINE void for_each_pixel(int64_t height, int64_t width, int worker, int workers,
                                                          Visit&& visit) {
  const auto [top, bottom] = share(height, worker, workers);
  for (int64_t y0 = top; y0 < bottom; y0 += kTileRows) {
    const int64_t y1 = std::min(y0 + kTileRows, bottom);
    for (int64_t x0 = 0; x0 < width; x0 += kTileColumns) {
      const int64_t x1 = std::min(x0 + kTileColumns, width);
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t x = x0; x < x1; ++x) visit(y * width + x);
      }
    }
  }
}

// The blur's first axis, reading the splatted values as the sum of the workers' splat buffers (summing them on
// the way saves a pass over the lattice); this worker's share of the vertices.
void blur_splats(const Lattice& lattice, const float* const* buffers, int count, float* to, int lanes, int worker,
                 int workers) {
  const auto [begin, end] = share(lattice.vertices, worker, workers);
  const int32_t* neighbour = &lattice.neighbour[0];
  for (int64_t v = begin + 1; v < end + 1; ++v) {
    const int64_t a = static_cast<int64_t>(neighbour[2 * v]) * lanes;
    const int64_t b = static_cast<int64_t>(neighbour[2 * v + 1]) * lanes;
    for (int c = 0; c < lanes; c += 8) {
      vf centre = vf{};
      vf sides = vf{};
      for (int i = 0; i < count; ++i) {
        centre += load(buffers[i] + v * lanes + c);
        sides += load(buffers[i] + a + c) + load(buffers[i] + b + c);
      }
      store(to + v * lanes + c, centre + 0.5f * sides);
    }
  }
}

// One axis of the blur, [1 2 1] / 2 along it; this worker's share of the vertices.
void blur(const Lattice& lattice, int axis, const float* from, float* to, int lanes, int worker, int workers) {
  const auto [begin, end] = share(lattice.vertices, worker, workers);
  const int32_t* neighbour = &lattice.neighbour[axis * (lattice.vertices + 1) * 2];
  for (int64_t v = begin + 1; v < end + 1; ++v) {
    const float* a = from + static_cast<int64_t>(neighbour[2 * v]) * lanes;
    const float* b = from + static_cast<int64_t>(neighbour[2 * v + 1]) * lanes;
    const float* centre = from + v * lanes;
    float* out = to + v * lanes;
    for (int c = 0; c < lanes; c += 8) store(out + c, load(centre + c) + 0.5f * (load(a + c) + load(b + c)));
  }
}

// Adds weight * q to the splat buffer at each of the point's simplex vertices; q: the point's `vectors` vectors.
KD_ALWAYS_INLINE void splat(const Lattice& lattice, int64_t p, const vf* q, int vectors,
                                                 float* buffer, int lanes) {
  const int corners = lattice.dims + 1;
  for (int r = 0; r < corners; ++r) {
    const float w = lattice.weight[p * corners + r];
    float* to = buffer + static_cast<int64_t>(lattice.vertex[p * corners + r]) * lanes;
    for (int j = 0; j < vectors; ++j) store(to + 8 * j, load(to + 8 * j) + w * q[j]);
  }
}

// The lanes of v reduced as a tree: a chain of 7 dependent operations would wait 7 latencies.
KD_ALWAYS_INLINE float lane_max(vf v) {
  const float a = std::max(v[0], v[1]), b = std::max(v[2], v[3]), c = std::max(v[4], v[5]), d = std::max(v[6], v[7]);
  return std::max(std::max(a, b), std::max(c, d));
}

KD_ALWAYS_INLINE float lane_sum(vf v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// Q0 = the probabilities floored and renormalised, log Q0 kept as -unary, and Q0 splatted into this worker's
// buffers (or written to `out` when there are no iterations); this worker's share of the points.
void start(const Lattice* const* lattices, float* const* buffers, int kernels, const float* probabilities,
           float floor, float* log_probability, float* out, bool write, int classes, int lanes, int64_t height,
           int64_t width, int worker, int workers) {
  alignas(32) float row[kMaxClassLanes];
  vf q[kMaxClassLanes / 8];
  for_each_pixel(height, width, worker, workers, [&](int64_t p) {
    const float* in = probabilities + p * classes;
    float total = 0.0f;
    for (int c = 0; c < classes; ++c) total += std::max(in[c], floor);
    for (int c = 0; c < lanes; ++c) {
      const float value = c < classes ? std::max(in[c], floor) : 0.0f;
      log_probability[p * lanes + c] = c < classes ? std::log(value) : 0.0f;
      row[c] = value / total;
    }
    if (write) std::memcpy(out + p * classes, row, classes * sizeof(float));
    for (int j = 0; j < lanes / 8; ++j) q[j] = load(row + 8 * j);
    for (int k = 0; k < kernels; ++k) splat(*lattices[k], p, q, lanes / 8, buffers[k], lanes);
  });
}

// One mean-field update for this worker's share of the points: score = log Q0 (= -unary) + the sum over the
// kernels of scale * the slice of their blurred values, Q = softmax(score); Q is then splatted into this
// worker's buffers for the next iteration, or, after the last, written to `out`. Rows of V vectors: V = 1-4
// (up to 32 classes) are unrolled with the scores in registers; V = 0 takes any number, lanes / 8.
template <int V>
void update_rows(const Lattice* const* lattices, const float* const* blurred, const float* scales,
                 float* const* buffers, int kernels, const float* log_probability, float* out, bool last, int classes,
                 int lanes, int64_t height, int64_t width, int worker, int workers) {
  const int vectors = V > 0 ? V : lanes / 8;
  alignas(32) float mask[kMaxClassLanes];  // 0 on the classes, -inf-like on the padding
  for (int c = 0; c < lanes; ++c) mask[c] = c < classes ? 0.0f : -1e30f;
  alignas(32) float row[kMaxClassLanes];
  const float* sources[kMaxCorners];
  float weights[kMaxCorners];
  vf score[V > 0 ? V : kMaxClassLanes / 8];
  for_each_pixel(height, width, worker, workers, [&](int64_t p) {
    // The rows to slice and their weights, over the corners of every kernel.
    int count = 0;
    for (int k = 0; k < kernels; ++k) {
      const Lattice& lattice = *lattices[k];
      const int corners = lattice.dims + 1;
      for (int r = 0; r < corners; ++r, ++count) {
        weights[count] = scales[k] * lattice.weight[p * corners + r];
        sources[count] = blurred[k] + static_cast<int64_t>(lattice.vertex[p * corners + r]) * lanes;
      }
    }
    // score = log Q0 + the slices: corner by corner with every vector in a register where V is fixed; vector by
    // vector otherwise, so that each accumulates in a register.
    for (int j = 0; j < vectors; ++j) score[j] = load(log_probability + p * lanes + 8 * j) + load(mask + 8 * j);
    if constexpr (V > 0) {
      for (int i = 0; i < count; ++i) {
        for (int j = 0; j < V; ++j) score[j] += weights[i] * load(sources[i] + 8 * j);
      }
    } else {
      for (int j = 0; j < vectors; ++j) {
        vf sum = score[j];
        for (int i = 0; i < count; ++i) sum += weights[i] * load(sources[i] + 8 * j);
        score[j] = sum;
      }
    }
    vf top = score[0];
    for (int j = 1; j < vectors; ++j) top = maximum(top, score[j]);
    const float most = lane_max(top);
    vf total = vf{};
    for (int j = 0; j < vectors; ++j) {
      score[j] = exp_nonpositive(score[j] - most);
      total += score[j];
    }
    const float inverse = 1.0f / lane_sum(total);
    for (int j = 0; j < vectors; ++j) score[j] *= inverse;
    if (last) {
      for (int j = 0; j < vectors; ++j) store(row + 8 * j, score[j]);
      std::memcpy(out + p * classes, row, classes * sizeof(float));
    } else {
      for (int k = 0; k < kernels; ++k) splat(*lattices[k], p, score, vectors, buffers[k], lanes);
    }
  });
}

void update(const Lattice* const* lattices, const float* const* blurred, const float* scales, float* const* buffers,
            int kernels, const float* log_probability, float* out, bool last, int classes, int lanes, int64_t height,
            int64_t width, int worker, int workers) {
  // update_rows for the row's number of vectors, where there is an unrolled one.
  constexpr decltype(&update_rows<0>) by_vectors[] = {update_rows<0>, update_rows<1>, update_rows<2>, update_rows<3>,
                                                       update_rows<4>};
  const int vectors = lanes / 8;
  by_vectors[vectors < 5 ? vectors : 0](lattices, blurred, scales, buffers, kernels, log_probability, out, last,
                                         classes, lanes, height, width, worker, workers);
}
