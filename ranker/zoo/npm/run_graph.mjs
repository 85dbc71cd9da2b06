// Runs a TF.js graph model with TensorFlow.js itself (CPU backend), as the reference for ranker/zoo/tfjs.py.
// Usage: node run_graph.mjs MODEL_JSON INPUT_F32 N H W OUTPUT_NODE OUT_F32
// INPUT_F32 holds float32 NHWC images; OUT_F32 receives the node's float32 values (its shape goes to stdout).
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { loadGraphModel } from '@tensorflow/tfjs-converter';

const [modelJson, inputFile, n, h, w, node, outFile] = process.argv.slice(2);
const spec = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
const shards = spec.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(path.dirname(modelJson), p))));
const weightData = new Uint8Array(Buffer.concat(shards)).buffer;
const weightSpecs = spec.weightsManifest.flatMap((g) => g.weights);
await tf.setBackend('cpu');
const model = await loadGraphModel(tf.io.fromMemory({ modelTopology: spec.modelTopology, weightSpecs, weightData }));
const raw = fs.readFileSync(inputFile);
const input = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4), [+n, +h, +w, 3]);
const out = model.execute(input, node);
fs.writeFileSync(outFile, Buffer.from((await out.data()).buffer));
console.log(JSON.stringify(out.shape));
