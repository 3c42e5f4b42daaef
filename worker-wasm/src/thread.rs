//! One compute thread of the volunteer page: the loop of a dedicated Web Worker, run through
//! `web_sys::DedicatedWorkerGlobalScope`. It never touches the network: the page's UI thread
//! posts it tasks with a copy of their panels, it runs the kernel in row bands sized by the
//! duty cycle ([`crate::duty`]), times each band with `performance.now()`, and transfers C's
//! buffer back. web/src/volunteer/compute-worker.js only loads this module (the variant the
//! page chose) and calls [`run_compute_thread`].
//!
//! Messages in:  `{type:"init", variant, module, duty, thread}` (read by the loader, then here)
//!               · `{type:"task", task}` · `{type:"duty", duty}` · `{type:"cancel", task_id}`
//!               · `{type:"forget", keys}` · `{type:"forget_all"}`
//!
//! Panels stay in this thread's wasm memory between tasks: a task's `a` (or `b`) sent with
//! `a_key` and `a_keep: true` is kept under that key, and a later task that names the key
//! without sending `a` uses the kept one. The page mirrors its own panel cache here (it sends
//! `forget` for every key it drops), so a panel crosses from the UI thread, and is copied into
//! wasm memory, once per thread rather than once per task: the page's trace showed the UI
//! thread spending a third of its time cloning panels for this thread (docs/benchmarks.md).
//! Messages out: `{type:"ready", info, gflops}`
//!               · `{type:"done", task_id, c, compute_ms, flops, gflops, started_at, ended_at}`
//!                 (`c: null` if cancelled; the two times in ms since the epoch, on the clock
//!                 every thread of the page shares, `performance.timeOrigin + now()`, so a
//!                 benchmark can line a thread's tasks up with the page's own events)
//!               · `{type:"error", task_id, error}`
//!               · `{type:"fatal", error}` (posted by the loader when the thread cannot start,
//!                 [`run_compute_thread`]'s errors included)

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use js_sys::futures::{spawn_local, JsFuture};
use js_sys::{
    Array, ArrayBuffer, Float32Array, Float64Array, Function, Object, Reflect, Uint8Array,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, Performance};

use crate::duty::{band_rows, parse_duty, rest_after};
use crate::speed::{task_flops, SpeedMeter};
use crate::{Dtype, KernelError};

// The page's messages are read with JavaScript's own conversions, as its loop in JavaScript
// read them (`Number("0.5")` is a duty of one half).
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(catch, js_name = Number)]
    fn js_number(value: &JsValue) -> Result<f64, JsValue>;
    #[wasm_bindgen(catch, js_name = String)]
    fn js_string(value: &JsValue) -> Result<String, JsValue>;
}

/// Takes over this worker: installs the message handler, handles the messages that arrived
/// while the module loaded (`early`, in order), warms the kernel up and posts `ready`.
#[wasm_bindgen(js_name = runComputeThread)]
pub fn run_compute_thread(init: JsValue, early: Array) -> Result<(), JsError> {
    let scope: DedicatedWorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| JsError::new("the compute loop runs only in a dedicated Web Worker"))?;
    let clock = scope
        .performance()
        .ok_or_else(|| JsError::new("this worker has no performance clock"))?;
    let thread = Rc::new(Thread {
        scope,
        clock,
        duty: Cell::new(parse_duty(number(&field(&init, "duty")))),
        speed: RefCell::new(SpeedMeter::default()),
        cancelled: js_sys::Set::new(&JsValue::UNDEFINED),
        queue: RefCell::new(VecDeque::new()),
        draining: Cell::new(false),
        panels: RefCell::new(HashMap::new()),
    });
    let handler = {
        let thread = Rc::clone(&thread);
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            thread.receive(&event.data())
        })
    };
    thread
        .scope
        .set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The handler serves for the worker's whole life; the page terminates the worker to stop it.
    handler.forget();
    for msg in early.iter() {
        thread.receive(&msg);
    }
    thread.warm_up().map_err(|e| JsError::new(&e.to_string()))?;
    crate::memory::fault_in(number(&field(&init, "memory_bytes")));
    let info = crate::api::kernel_info()?;
    thread.post(
        &[
            ("type", "ready".into()),
            ("info", info),
            ("gflops", thread.speed.borrow().gflops().into()),
        ],
        None,
    );
    Ok(())
}

/// The state of this worker's loop, shared by the message handler and the task queue.
struct Thread {
    scope: DedicatedWorkerGlobalScope,
    /// `performance.now()`: sub-millisecond, unlike `Date.now()`, and monotonic.
    clock: Performance,
    /// The share of this thread's time spent computing, read before every band.
    duty: Cell<f64>,
    /// This thread's measured speed: sizes the bands, and goes to the page with each result.
    speed: RefCell<SpeedMeter>,
    /// Task ids the page cancelled (a JavaScript `Set`, so ids compare as the page's do);
    /// checked between bands, and cleared once the task is finished.
    cancelled: js_sys::Set,
    /// Tasks received and not yet started: one runs at a time.
    queue: RefCell<VecDeque<Queued>>,
    /// Whether a future is draining `queue`; a task that arrives then waits its turn.
    draining: Cell<bool>,
    /// Panels kept between tasks, by the server's key (see the module's doc).
    panels: RefCell<HashMap<String, Panel>>,
}

/// A task waiting its turn, with the kept panels it names as they were when it arrived: the
/// page may say to forget a panel (its cache dropped it, or started afresh) while a task that
/// was handed over with it still waits here, and that task must still find it.
struct Queued {
    task: JsValue,
    a: Option<Panel>,
    b: Option<Panel>,
}

/// A panel kept in wasm memory, shared with the tasks that use it.
#[derive(Clone)]
enum Panel {
    F32(Rc<Vec<f32>>),
    F64(Rc<Vec<f64>>),
}

/// A task's product, ready to transfer.
struct Product {
    /// C's bytes, in a buffer of its own (transferred, not copied).
    buffer: ArrayBuffer,
    /// Time spent computing, rests excluded.
    ms: f64,
    /// The flops of the whole task.
    flops: f64,
}

impl Thread {
    /// Handles one message from the page; unknown ones are ignored.
    fn receive(self: &Rc<Self>, msg: &JsValue) {
        match field(msg, "type").as_string().as_deref() {
            Some("task") => {
                let task = field(msg, "task");
                self.keep_panels(&task);
                let (a, b) = (self.held(&task, "a"), self.held(&task, "b"));
                self.queue.borrow_mut().push_back(Queued { task, a, b });
                if !self.draining.replace(true) {
                    spawn_local(Rc::clone(self).drain());
                }
            }
            Some("duty") => self.duty.set(parse_duty(number(&field(msg, "duty")))),
            Some("cancel") => {
                self.cancelled.add(&field(msg, "task_id"));
            }
            Some("forget") => {
                let keys = field(msg, "keys");
                if Array::is_array(&keys) {
                    let mut panels = self.panels.borrow_mut();
                    for key in Array::from(&keys).iter() {
                        if let Some(key) = key.as_string() {
                            panels.remove(&key);
                        }
                    }
                }
            }
            Some("forget_all") => self.panels.borrow_mut().clear(),
            _ => {}
        }
    }

    /// Runs queued tasks one after another; messages (duty, cancel) are handled while it rests
    /// between row bands.
    async fn drain(self: Rc<Self>) {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some(queued) = next else { break };
            self.run(&queued).await;
        }
        self.draining.set(false);
    }

    async fn run(&self, queued: &Queued) {
        let task = &queued.task;
        let id = field(task, "task_id");
        let started_at = self.epoch_ms();
        match self.compute(queued, &id).await {
            Ok(Some(product)) => {
                self.post(
                    &[
                        ("type", "done".into()),
                        ("task_id", id.clone()),
                        ("c", product.buffer.clone().into()),
                        ("compute_ms", product.ms.into()),
                        ("flops", product.flops.into()),
                        ("gflops", self.speed.borrow().gflops().into()),
                        ("started_at", started_at.into()),
                        ("ended_at", self.epoch_ms().into()),
                    ],
                    Some(&product.buffer),
                );
            }
            Ok(None) => self.post(
                &[
                    ("type", "done".into()),
                    ("task_id", id.clone()),
                    ("c", JsValue::NULL),
                    ("compute_ms", 0.into()),
                    ("flops", 0.into()),
                ],
                None,
            ),
            Err(e) => {
                let name = ["dtype", "m", "k", "n"].map(|key| text(&field(task, key)));
                let error = format!("{} {}x{}x{}: {e}", name[0], name[1], name[2], name[3]);
                self.post(
                    &[
                        ("type", "error".into()),
                        ("task_id", id.clone()),
                        ("error", error.into()),
                    ],
                    None,
                );
            }
        }
        self.cancelled.delete(&id);
    }

    /// C for one task; `None` if it was cancelled before it finished.
    async fn compute(&self, queued: &Queued, id: &JsValue) -> Result<Option<Product>, KernelError> {
        let task = &queued.task;
        let dtype = field(task, "dtype");
        let m = dimension("m", &field(task, "m"))?;
        let k = dimension("k", &field(task, "k"))?;
        let n = dimension("n", &field(task, "n"))?;
        // The size is checked before the dtype, as the page's own loop did; a panel this
        // thread holds is checked when it is looked up.
        let size: u64 = if dtype.as_string().as_deref() == Some("f64") {
            8
        } else {
            4
        };
        let (expected_a, expected_b) = (bytes(m, k, size), bytes(k, n, size));
        let (got_a, got_b) = (
            sent_bytes(task, "a").unwrap_or(expected_a),
            sent_bytes(task, "b").unwrap_or(expected_b),
        );
        if got_a != expected_a || got_b != expected_b {
            return Err(KernelError::OperandBytes {
                a: got_a,
                b: got_b,
                expected_a,
                expected_b,
            });
        }
        if self.cancelled.has(id) {
            return Ok(None);
        }
        let dtype: Dtype = dtype.as_string().unwrap_or_default().parse()?;
        if m == 0 || k == 0 || n == 0 {
            return Err(KernelError::ZeroDimension { m, k, n });
        }
        match dtype {
            Dtype::F32 => self.bands::<f32>(id, queued, m, k, n).await,
            Dtype::F64 => self.bands::<f64>(id, queued, m, k, n).await,
        }
    }

    /// Keeps the panels `task` carries with `_keep`, as it arrives: the page counts them as
    /// kept from the moment it sends them, whatever becomes of the task (cancelled before it
    /// starts, or refused).
    fn keep_panels(&self, task: &JsValue) {
        for name in ["a", "b"] {
            if field(task, &format!("{name}_keep")).as_bool() != Some(true) {
                continue;
            }
            let (Some(key), sent) = (
                field(task, &format!("{name}_key")).as_string(),
                field(task, name),
            ) else {
                continue;
            };
            if sent.is_undefined() || sent.is_null() {
                continue;
            }
            // `new Uint8Array(x)`: a view of an ArrayBuffer (what the page sends).
            let bytes = Uint8Array::new(&sent);
            let panel = match field(task, "dtype").as_string().as_deref() {
                Some("f32") => f32::keep(Rc::new(f32::read(&bytes))),
                Some("f64") => f64::keep(Rc::new(f64::read(&bytes))),
                _ => continue,
            };
            self.panels.borrow_mut().insert(key, panel);
        }
    }

    /// The kept panel operand `name` ("a" or "b") of `task` names, as this thread holds it
    /// now (kept already, or kept on this task's arrival if it came with `_keep`).
    fn held(&self, task: &JsValue, name: &str) -> Option<Panel> {
        let key = field(task, &format!("{name}_key")).as_string()?;
        self.panels.borrow().get(&key).cloned()
    }

    /// Operand `name` ("a" or "b") of a task, of `len` elements: the one sent (copied into
    /// wasm memory), else the kept one it named when it arrived (`held`).
    fn operand<T: Element>(
        &self,
        task: &JsValue,
        name: &str,
        len: usize,
        held: Option<&Panel>,
    ) -> Result<Rc<Vec<T>>, KernelError> {
        let sent = field(task, name);
        let kept = field(task, &format!("{name}_keep")).as_bool() == Some(true);
        if !sent.is_undefined() && !sent.is_null() && !kept {
            return Ok(Rc::new(T::read(&Uint8Array::new(&sent))));
        }
        held.and_then(T::held)
            .filter(|values| values.len() == len)
            .ok_or_else(|| {
                let key = field(task, &format!("{name}_key"));
                KernelError::PanelNotHeld(key.as_string().unwrap_or_default())
            })
    }

    /// Computes C = A·B (m×k by k×n, checked) band by band, resting after each band for as
    /// long as the duty asks; checks for cancellation between bands. The first band's time
    /// includes copying the operands into wasm memory and the last band's copying C out, so the
    /// task's `compute_ms` covers all its work, as `runTask`'s caller would time it.
    async fn bands<T: Element>(
        &self,
        id: &JsValue,
        queued: &Queued,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Option<Product>, KernelError> {
        let mut start = self.clock.now();
        let task = &queued.task;
        let a = self.operand::<T>(task, "a", m.saturating_mul(k), queued.a.as_ref())?;
        let b = self.operand::<T>(task, "b", k.saturating_mul(n), queued.b.as_ref())?;
        let mut c = vec![T::default(); m.saturating_mul(n)];
        let (mut row, mut busy) = (0, 0.0);
        loop {
            let gflops = self.speed.borrow().gflops();
            let rows = (m - row).min(band_rows(m, k, n, gflops, self.duty.get()));
            let band = row..row + rows;
            T::product(
                &a[band.start * k..band.end * k],
                &b,
                &mut c[band.start * n..band.end * n],
                rows,
                k,
                n,
            )?;
            row = band.end;
            let product = (row == m).then(|| T::write(&c));
            let dt = self.clock.now() - start;
            busy += dt;
            self.speed.borrow_mut().add(task_flops(rows, k, n), dt);
            let rest = rest_after(dt, self.duty.get());
            if rest > 0.0 {
                self.sleep(rest).await;
            }
            if let Some(buffer) = product {
                return Ok(Some(Product {
                    buffer,
                    ms: busy,
                    flops: task_flops(m, k, n),
                }));
            }
            if self.cancelled.has(id) {
                return Ok(None);
            }
            start = self.clock.now();
        }
    }

    /// Warms the kernel up before the first real tile (the first calls pay for the engine's
    /// lazy compilation tiers and for memory growth), then times a few products for a first
    /// speed estimate, so that the first bands are sized from a measurement. Each product goes
    /// the way a task's does, copies in and out included, so the estimate is of the same kind.
    fn warm_up(&self) -> Result<(), KernelError> {
        crate::api::warm_up(None);
        const SIZE: usize = 192;
        const REPS: u32 = 3;
        let values: Vec<f32> = (0..SIZE * SIZE)
            .map(|i| (((i * 7919) % 1000) as f64 / 1000.0 - 0.5) as f32)
            .collect();
        let operand = Uint8Array::new(&Float32Array::from(&values[..]).buffer());
        let product = || -> Result<ArrayBuffer, KernelError> {
            let (a, b) = (f32::read(&operand), f32::read(&operand));
            let mut c = vec![0.0; SIZE * SIZE];
            f32::product(&a, &b, &mut c, SIZE, SIZE, SIZE)?;
            Ok(f32::write(&c))
        };
        product()?;
        let start = self.clock.now();
        for _ in 0..REPS {
            product()?;
        }
        let ms = self.clock.now() - start;
        let flops = f64::from(REPS) * task_flops(SIZE, SIZE, SIZE);
        self.speed.borrow_mut().add(flops, ms);
        Ok(())
    }

    /// Now, in ms since the epoch on the clock the page and all its threads share.
    fn epoch_ms(&self) -> f64 {
        self.clock.time_origin() + self.clock.now()
    }

    /// Resolves after `ms` (truncated to whole milliseconds, as `setTimeout` does), letting
    /// the worker handle the messages that came meanwhile.
    async fn sleep(&self, ms: f64) {
        let promise = js_sys::Promise::new(&mut |resolve: Function, _reject: Function| {
            let timer = self
                .scope
                .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms as i32);
            if timer.is_err() {
                // No timer: go on at once rather than wait forever.
                let _ = resolve.call0(&JsValue::UNDEFINED);
            }
        });
        // The promise only ever resolves.
        let _ = JsFuture::from(promise).await;
    }

    /// Posts `{key: value, ...}` to the page, transferring `transfer` if given.
    fn post(&self, fields: &[(&str, JsValue)], transfer: Option<&ArrayBuffer>) {
        let msg = Object::new();
        for (key, value) in fields {
            // Defining a property on a fresh plain object cannot fail.
            let _ = Reflect::set(&msg, &JsValue::from_str(key), value);
        }
        let posted = match transfer {
            Some(buffer) => self
                .scope
                .post_message_with_transfer(&msg, &Array::of1(buffer)),
            None => self.scope.post_message(&msg),
        };
        if let Err(e) = posted {
            // Numbers, strings, plain objects and a transferable buffer always clone; if one
            // ever does not, the page's log is the place to say so.
            web_sys::console::error_2(&"compute thread: cannot post a message".into(), &e);
        }
    }
}

/// An element type as the loop needs it: its typed array and its kernel.
trait Element: Copy + Default + 'static {
    /// `bytes` (a whole number of elements, native = little-endian order) in wasm memory.
    fn read(bytes: &Uint8Array) -> Vec<Self>;
    /// `values` as a kept panel.
    fn keep(values: Rc<Vec<Self>>) -> Panel;
    /// A kept panel's values, if it holds this type.
    fn held(panel: &Panel) -> Option<Rc<Vec<Self>>>;
    /// `values` in a new JavaScript buffer.
    fn write(values: &[Self]) -> ArrayBuffer;
    /// `c = a·b`, checked.
    fn product(
        a: &[Self],
        b: &[Self],
        c: &mut [Self],
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<(), KernelError>;
}

macro_rules! impl_element {
    ($t:ty, $array:ty, $into:path, $panel:ident) => {
        impl Element for $t {
            fn read(bytes: &Uint8Array) -> Vec<Self> {
                let len = bytes.length() / std::mem::size_of::<$t>() as u32;
                <$array>::new_with_byte_offset_and_length(&bytes.buffer(), bytes.byte_offset(), len)
                    .to_vec()
            }
            fn keep(values: Rc<Vec<Self>>) -> Panel {
                Panel::$panel(values)
            }
            fn held(panel: &Panel) -> Option<Rc<Vec<Self>>> {
                match panel {
                    Panel::$panel(values) => Some(Rc::clone(values)),
                    _ => None,
                }
            }
            fn write(values: &[Self]) -> ArrayBuffer {
                let out = <$array>::new_with_length(values.len() as u32);
                out.copy_from(values);
                out.buffer()
            }
            fn product(
                a: &[Self],
                b: &[Self],
                c: &mut [Self],
                m: usize,
                k: usize,
                n: usize,
            ) -> Result<(), KernelError> {
                $into(a, b, c, m, k, n)
            }
        }
    };
}
impl_element!(f32, Float32Array, crate::matmul_f32_into, F32);
impl_element!(f64, Float64Array, crate::matmul_f64_into, F64);

/// The byte length of operand `name` if the task carries it (`None` when it names a kept one).
fn sent_bytes(task: &JsValue, name: &str) -> Option<u64> {
    let sent = field(task, name);
    (!sent.is_undefined() && !sent.is_null()).then(|| Uint8Array::new(&sent).length().into())
}

/// `obj[key]`, or `undefined` when `obj` has no properties to read.
fn field(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `Number(value)`; NaN (which every reader treats as unset) if even that throws.
fn number(value: &JsValue) -> f64 {
    js_number(value).unwrap_or(f64::NAN)
}

/// `String(value)`, for error messages that name a task's fields as the page sent them.
fn text(value: &JsValue) -> String {
    js_string(value).unwrap_or_else(|_| "?".to_owned())
}

/// A whole, non-negative number of rows or columns that wasm32 can index.
fn dimension(name: &'static str, value: &JsValue) -> Result<usize, KernelError> {
    let x = number(value);
    if x >= 0.0 && x.fract() == 0.0 && x <= f64::from(u32::MAX) {
        Ok(x as usize)
    } else {
        Err(KernelError::NotADimension {
            name,
            value: text(value),
        })
    }
}

/// Bytes of a rows×cols matrix of `size`-byte elements (saturating: such a product never
/// matches a real buffer's length).
fn bytes(rows: usize, cols: usize, size: u64) -> u64 {
    (rows as u64)
        .saturating_mul(cols as u64)
        .saturating_mul(size)
}
