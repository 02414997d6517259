//! A small pool of regorus VMs so a request reuses a VM with the program already loaded.
//!
//! A VM is taken out of the pool for one evaluation (so no lock is held while evaluating) and given
//! back afterwards; VMs loaded with an older program (before a reload) are dropped. An empty pool
//! creates a fresh VM, so concurrency is never limited by the pool.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regorus::rvm::RegoVM;
use regorus::rvm::program::Program;
use regorus::utils::limits::ExecutionTimerConfig;

/// VMs kept for reuse: enough for the worker threads of a small machine.
pub(crate) const DEFAULT_CAPACITY: usize = 16;

/// Instruction limit per evaluation (regorus's default of 25,000 is low for real policies); the
/// time limit is the real bound.
const MAX_INSTRUCTIONS: usize = 5_000_000;

/// How many work units run between two clock checks.
const TIMER_CHECK_INTERVAL: u32 = 64;

pub(crate) struct VmPool {
    idle: Mutex<Vec<RegoVM>>,
    capacity: usize,
}

impl std::fmt::Debug for VmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmPool")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl VmPool {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
        }
    }

    /// A VM loaded with `program`, from the pool when one matches.
    pub(crate) fn take(&self, program: &Arc<Program>, timeout: Duration) -> RegoVM {
        let reused = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        };
        match reused {
            Some(vm) if Arc::ptr_eq(vm.get_program(), program) => vm,
            _ => fresh_vm(program, timeout),
        }
    }

    /// Return a VM after use; it is kept only if it still runs the current program.
    pub(crate) fn give_back(&self, vm: RegoVM, current: &Arc<Program>) {
        if !Arc::ptr_eq(vm.get_program(), current) {
            return;
        }
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < self.capacity {
            idle.push(vm);
        }
    }
}

fn fresh_vm(program: &Arc<Program>, timeout: Duration) -> RegoVM {
    let mut vm = RegoVM::new();
    vm.load_program(Arc::clone(program));
    vm.set_max_instructions(MAX_INSTRUCTIONS);
    vm.set_strict_builtin_errors(false);
    vm.set_execution_timer_config(Some(ExecutionTimerConfig {
        limit: timeout,
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    }));
    vm
}
