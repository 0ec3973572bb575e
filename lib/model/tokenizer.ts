/**
 * The tokenizer of a model folder: tokenizer.json through @huggingface/tokenizers, with tokenizer_config.json
 * for special tokens and the chat template.
 */
import * as path from 'path'
import { Tokenizer } from '@huggingface/tokenizers'
import { RecodeError } from '../errors'
import { readJsonFile } from './config'

export interface ModelTokenizer {
  /** Token ids of `text` (special tokens written in the text become their ids; no BOS/EOS added). */
  encode: (text: string) => number[]
  decode: (ids: number[], options?: { skipSpecialTokens?: boolean }) => string
  /** Id of a token string (special tokens included), or undefined. */
  tokenToId: (token: string) => number | undefined
  /** tokenizer_config.json as parsed. */
  config: Record<string, any>
  /** Number of ids the tokenizer knows (added tokens included). */
  size: number
}

export function loadTokenizer(dir: string): ModelTokenizer {
  const jsonFile = path.join(dir, 'tokenizer.json')
  const configFile = path.join(dir, 'tokenizer_config.json')
  const tokJson = readJsonFile(jsonFile)
  const tokConfig = readJsonFile(configFile)
  if (tokJson === null || typeof tokJson !== 'object' || typeof tokJson.model !== 'object')
    throw new RecodeError('ERR_MODEL', `${jsonFile}: has no "model" section`)
  let tok: Tokenizer
  try {
    tok = new Tokenizer(tokJson, tokConfig)
  } catch (err) {
    throw new RecodeError('ERR_MODEL', `${jsonFile}: @huggingface/tokenizers cannot load it (${(err as Error).message})`, { cause: err })
  }
  const vocab = tok.get_vocab(true)
  let size = 0
  for (const id of vocab.values()) size = Math.max(size, id + 1)
  return {
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    // ids the tokenizer lacks (a model's vocab_size may exceed the tokenizer's, as Qwen's does) decode to nothing
    decode: (ids, options = {}) => {
      const known = ids.filter((id) => id < size)
      return known.length === 0
        ? ''
        : tok.decode(known, { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false })
    },
    tokenToId: (t) => tok.token_to_id(t),
    config: tokConfig,
    size
  }
}
