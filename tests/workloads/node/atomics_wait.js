// Diagnosis: a Node.js program whose worker thread is parked in Atomics.wait (an application
// wait) while the event loop and V8/libuv's own threads idle (runtime waits). Expected roles:
// the worker's OS thread "app"; the event loop, platform workers and inspector thread "runtime".
// Run with --perf-basic-prof to let stallprobe name the JavaScript function (parkForever).
const { Worker } = require('worker_threads');

const source = `
function parkForever(cell) {
  // Waits until someone changes cell[0]: nobody does.
  Atomics.wait(cell, 0, 0);
}
const cell = new Int32Array(new SharedArrayBuffer(4));
parkForever(cell);
`;

const worker = new Worker(source, { eval: true });
setTimeout(() => {
  if (process.argv.includes('--ready')) {
    process.stdout.write('ready\n');
  }
}, 500);
setInterval(() => {}, 1000); // keep the event loop alive
