// Statistics for the sampling tests: the chi-square goodness-of-fit p-value, written from the textbook
// definitions (regularised incomplete gamma by its series and continued fraction, log-gamma by Lanczos).

const lanczos = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
  -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7
]

export function logGamma(z) {
  if (z < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * z))) - logGamma(1 - z)
  z -= 1
  let x = lanczos[0]
  for (let i = 1; i < 9; i++) x += lanczos[i] / (z + i)
  const t = z + 7.5
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(x)
}

/** Q(a, x) = Γ(a, x) / Γ(a), the upper regularised incomplete gamma function. */
export function gammaQ(a, x) {
  if (x <= 0) return 1
  const front = Math.exp(-x + a * Math.log(x) - logGamma(a))
  if (x < a + 1) {
    // series for P
    let ap = a,
      del = 1 / a,
      sum = del
    for (let i = 0; i < 10000; i++) {
      ap += 1
      del *= x / ap
      sum += del
      if (Math.abs(del) < Math.abs(sum) * 1e-15) break
    }
    return 1 - sum * front
  }
  // continued fraction for Q (modified Lentz)
  const tiny = 1e-300
  let b = x + 1 - a,
    c = 1 / tiny,
    d = 1 / b,
    h = d
  for (let i = 1; i < 10000; i++) {
    const an = -i * (i - a)
    b += 2
    d = an * d + b
    if (Math.abs(d) < tiny) d = tiny
    c = b + an / c
    if (Math.abs(c) < tiny) c = tiny
    d = 1 / d
    const del = d * c
    h *= del
    if (Math.abs(del - 1) < 1e-15) break
  }
  return front * h
}

/**
 * Chi-square test of observed counts against expected probabilities. Cells with expected count below 5 are
 * pooled into one cell. Returns { stat, df, p, outside } where `outside` counts draws of cells whose
 * probability is 0 (an exact filter must never produce them).
 */
export function chiSquare(counts, probs, draws) {
  let stat = 0,
    df = -1,
    pooledObs = 0,
    pooledExp = 0,
    outside = 0
  for (let i = 0; i < probs.length; i++) {
    const e = probs[i] * draws
    if (probs[i] === 0) {
      outside += counts[i]
      continue
    }
    if (e < 5) {
      pooledObs += counts[i]
      pooledExp += e
      continue
    }
    stat += (counts[i] - e) ** 2 / e
    df++
  }
  if (pooledExp > 0) {
    stat += (pooledObs - pooledExp) ** 2 / pooledExp
    df++
  }
  const p = df > 0 ? gammaQ(df / 2, stat / 2) : 1
  return { stat, df, p, outside }
}
