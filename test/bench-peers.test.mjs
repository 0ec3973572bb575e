// The eager PyTorch peer of bench/peers.bench.mjs (bench/peers/qwen2_torch.py) must keep computing the model
// recode computes: logits on the same weights within the bench's derived fp32 tolerance, the same training loss,
// a cached decode that matches its uncached forward; and the check must reject a peer that computes something
// else (a different rope base).
// Skips, saying why, only when Debian's python3-torch cannot be imported.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { require } from './helpers.mjs'
import { checkPeerLogits, runPeer, torchUnavailable } from '../bench/peers/torch.mjs'

const { initModel, loadModel, ModelTrainer } = require('../dist/cjs/index.js')

const why = torchUnavailable()
if (why) {
  t.comment(`skipped: ${why}`)
  t.pass('PyTorch peer not checked (python3-torch missing)')
} else {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'recode-bench-peers-'))
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const dir = path.join(tmp, 'tiny')
  initModel({ preset: 'tiny', arch: 'qwen2', out: dir, seed: 3 })
  const model = await loadModel(dir, { device: 'cpu', maxBatch: 2, maxContext: 64 })
  t.teardown(() => model.dispose())
  const V = model.config.vocab
  // odd lengths, tokens spread over the vocabulary
  const ids = [Array.from({ length: 29 }, (_, i) => (i * 7919 + 3) % V), Array.from({ length: 7 }, (_, i) => (i * 104729 + 1) % V)]

  t.test('peer logits agree with recode within the derived fp32 tolerance', async (t) => {
    const c = await checkPeerLogits(model, dir, ids)
    t.comment(
      `max |recode - torch fp32| ${c.recodeVsTorch32.toExponential(2)}, |recode - fp64| ${c.recodeVsTorch64.toExponential(2)}, ` +
        `|torch fp32 - fp64| ${c.torch32VsTorch64.toExponential(2)}, tolerance ${c.tolerance.toExponential(2)}, max |logit| ${c.maxAbsLogit.toFixed(2)}`
    )
    t.ok(c.ok, 'the check passes')
    t.ok(c.tolerance < 1e-3 * c.maxAbsLogit, 'the tolerance is far below the logits themselves (the check can tell models apart)')
  })

  t.test('the check refuses a peer that computes another model', async (t) => {
    const other = path.join(tmp, 'other-rope')
    fs.cpSync(dir, other, { recursive: true })
    const cfg = JSON.parse(fs.readFileSync(path.join(other, 'config.json'), 'utf8'))
    cfg.rope_theta = 10000 // same weights, another rotary base: only positions > 0 differ
    fs.writeFileSync(path.join(other, 'config.json'), JSON.stringify(cfg))
    const c = await checkPeerLogits(model, other, ids)
    t.notOk(c.ok, `refused (max |recode - peer| ${c.recodeVsTorch32.toExponential(2)} > tolerance ${c.tolerance.toExponential(2)})`)
  })

  t.test('training loss and decode of the peer', async (t) => {
    const B = 2
    const S = 17
    const batch = Array.from({ length: B }, (_, b) => {
      const tokens = Array.from({ length: S }, (_, i) => (i * 31 + b * 101 + 7) % V)
      return { tokens, weights: tokens.map((_, j) => (j === 0 ? 0 : 1 / (B * (S - 1)))) }
    })
    const tr = new ModelTrainer(model)
    const ours = (await tr.step(batch)).loss
    tr.dispose()
    const c = await checkPeerLogits(
      model,
      dir,
      batch.map((s) => s.tokens)
    )
    const peer = runPeer({
      dir,
      threads: 1,
      tasks: [
        { op: 'train', ids: batch.map((s) => s.tokens), reps: 1 },
        { op: 'decode', batch: 2, prompt: 5, steps: 3 }
      ]
    })
    const [train, decode] = peer.results
    // the loss is a weighted mean (weights sum to 1) of log-softmax entries, each within 2x the logits' error
    t.ok(
      Math.abs(train.loss - ours) <= 2 * c.tolerance,
      `loss: peer ${train.loss} vs recode ${ours} (|diff| ${Math.abs(train.loss - ours).toExponential(2)} <= ${(2 * c.tolerance).toExponential(2)})`
    )
    t.ok(train.seconds > 0 && Number.isFinite(train.seconds), 'the training step was timed')
    t.ok(decode.tokensPerSecond > 0 && Number.isFinite(decode.tokensPerSecond), 'the cached decode ran')
    t.ok(
      decode.cacheError <= c.tolerance,
      `the cached decode computes the uncached forward's logits (|diff| ${decode.cacheError.toExponential(2)} <= ${c.tolerance.toExponential(2)})`
    )
  })
}
