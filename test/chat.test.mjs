// Chat templates: the published Qwen2.5 template (test/fixtures/qwen2.5-tokenizer_config.json) rendered
// with @huggingface/jinja must give the same text as transformers' apply_chat_template (expected strings
// below were checked against Python jinja2 with trim_blocks/lstrip_blocks, as transformers renders).
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { root } from './helpers.mjs'

const { loadChatTemplate, renderChatTemplate } = await import(path.join(root, 'dist/cjs/chat.js'))
const qwenConfig = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/qwen2.5-tokenizer_config.json'), 'utf8'))

const prefill = 'Let me solve this step by step.\n<think>'
const conversation = [
  { role: 'system', content: 'SYS' },
  { role: 'user', content: '\nhello' },
  { role: 'assistant', content: prefill }
]

t.test('loadChatTemplate', async (t) => {
  const tpl = loadChatTemplate(qwenConfig)
  t.equal(tpl, qwenConfig.chat_template, 'string form returned as is')
  const listConfig = {
    chat_template: [
      { name: 'default', template: 'A' },
      { name: 'tool_use', template: 'B' }
    ]
  }
  t.equal(loadChatTemplate(listConfig), 'A', 'list form: default')
  t.equal(loadChatTemplate(listConfig, 'tool_use'), 'B', 'list form: by name')
  t.throws(() => loadChatTemplate(listConfig, 'rag'), { code: 'ERR_MODEL', message: /no chat template named 'rag'/ })
  t.equal(loadChatTemplate({ chat_template: [{ name: 'only', template: 'C' }] }), 'C', 'single unnamed-default entry')
  t.throws(() => loadChatTemplate({ eos_token: '</s>' }), { code: 'ERR_MODEL', message: /no chat_template/ })
  t.throws(() => loadChatTemplate({ chat_template: [{ name: 'x' }] }), { code: 'ERR_MODEL', message: /chat_template\[0\]/ })
  t.throws(() => loadChatTemplate({ chat_template: 42 }), { code: 'ERR_MODEL' })
})

t.test('Qwen2.5 template: generation prompt, default system, full turns', async (t) => {
  const tpl = loadChatTemplate(qwenConfig)
  t.equal(
    renderChatTemplate(tpl, conversation.slice(0, 2), { addGenerationPrompt: true }),
    '<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n\nhello<|im_end|>\n<|im_start|>assistant\n'
  )
  t.equal(
    renderChatTemplate(tpl, conversation.slice(1, 2), { addGenerationPrompt: true }),
    '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n\nhello<|im_end|>\n<|im_start|>assistant\n',
    'Qwen inserts its default system message'
  )
  t.equal(
    renderChatTemplate(tpl, conversation),
    '<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n\nhello<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think><|im_end|>\n',
    'a closed assistant turn ends with <|im_end|>'
  )
})

t.test('continueFinalMessage cuts after the prefill (transformers continue_final_message)', async (t) => {
  const tpl = loadChatTemplate(qwenConfig)
  const text = renderChatTemplate(tpl, conversation, { continueFinalMessage: true })
  t.equal(
    text,
    '<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n\nhello<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>'
  )
  t.notOk(text.endsWith('<|im_end|>\n'), 'no end-of-turn after the prefill')
  // The prefill text also occurs earlier (inside the user message): the cut is at the last occurrence.
  const repeated = [
    { role: 'user', content: `quote: ${prefill}` },
    { role: 'assistant', content: prefill }
  ]
  t.ok(renderChatTemplate(tpl, repeated, { continueFinalMessage: true }).endsWith(`<|im_start|>assistant\n${prefill}`))
  t.throws(() => renderChatTemplate(tpl, conversation, { continueFinalMessage: true, addGenerationPrompt: true }), {
    code: 'ERR_INVALID_ARG'
  })
  t.throws(() => renderChatTemplate(tpl, conversation.slice(0, 2), { continueFinalMessage: true }), {
    code: 'ERR_INVALID_ARG',
    message: /assistant/
  })
})

t.test('special tokens, templates that strip content, errors', async (t) => {
  // A Llama-style template: bos_token from specialTokens, contents trimmed by the template.
  const tpl =
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
  const msgs = [
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: 'partial answer  \n' }
  ]
  t.equal(
    renderChatTemplate(tpl, msgs, { specialTokens: { bos_token: '<s>', eos_token: '</s>' } }),
    '<s><user>hi</s><assistant>partial answer</s>'
  )
  t.equal(
    renderChatTemplate(tpl, msgs, { continueFinalMessage: true, specialTokens: { bos_token: '<s>', eos_token: '</s>' } }),
    '<s><user>hi</s><assistant>partial answer',
    'trailing whitespace the template stripped is not restored'
  )
  const keeping = '{% for m in messages %}[{{ m.role }}]{{ m.content }}[end]{% endfor %}'
  t.equal(
    renderChatTemplate(keeping, [{ role: 'assistant', content: '  go on \n' }], { continueFinalMessage: true }),
    '[assistant]  go on \n',
    'whitespace kept by the template is kept'
  )
  t.throws(() => renderChatTemplate("{{ raise_exception('roles must alternate') }}", msgs), {
    code: 'ERR_MODEL',
    message: /roles must alternate/
  })
  t.throws(() => renderChatTemplate('{% if %}', msgs), { code: 'ERR_MODEL', message: /does not parse/ })
  t.throws(() => renderChatTemplate(tpl, []), { code: 'ERR_INVALID_ARG' })
  t.throws(() => renderChatTemplate(tpl, [{ role: 'user' }]), { code: 'ERR_INVALID_ARG', message: /messages\[0\]/ })
  t.throws(
    () =>
      renderChatTemplate('{% for m in messages %}{{ m.role }}{% endfor %}', [{ role: 'assistant', content: 'x' }], {
        continueFinalMessage: true
      }),
    { code: 'ERR_MODEL', message: /does not appear/ }
  )
})
