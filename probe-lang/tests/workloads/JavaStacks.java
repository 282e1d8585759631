// JavaStacks: Java threads parked in known places, for probe-lang's live thread-dump test.
//
//   locker-a, locker-b   a monitor deadlock: each holds one Object's monitor, wants the other's
//   parker               parked on a ReentrantLock that "holder" keeps while it sleeps
//   holder               holds the ReentrantLock, in Thread.sleep
//   waiter               in Object.wait() on a monitor nobody notifies
//   main                 runs hot() until the JIT compiles it, prints `ready`, then joins
//                        locker-a: forever
// On SIGTERM the shutdown hook "shutdown-hook" synchronizes on A (held by locker-a) and blocks:
// the JVM never exits. Lines the test asserts carry `// @name` markers. HotSpot shows a thread
// blocked entering `synchronized (x) {` at the line of the block's first statement (the
// bytecode after monitorenter), so that is where those markers are.
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.locks.ReentrantLock;

public class JavaStacks {
    static final Object A = new Object();
    static final Object B = new Object();
    static final Object NEVER = new Object();
    static final ReentrantLock LOCK = new ReentrantLock();
    static final CountDownLatch BOTH_IN = new CountDownLatch(2);

    static void lockBoth(Object first, Object second) throws InterruptedException {
        synchronized (first) { // @first
            BOTH_IN.countDown();
            BOTH_IN.await();
            synchronized (second) {
                System.err.println("unreachable"); // @second
            }
        }
    }

    static void hold() throws InterruptedException {
        LOCK.lock();
        try {
            Thread.sleep(Long.MAX_VALUE); // @hold
        } finally {
            LOCK.unlock();
        }
    }

    static void park() {
        LOCK.lock(); // @park
        LOCK.unlock();
    }

    static void waitForever() throws InterruptedException {
        synchronized (NEVER) {
            NEVER.wait(); // @wait
        }
    }

    static int hot(int i) {
        return (i * 31) ^ (i >>> 3);
    }

    interface Body {
        void run() throws InterruptedException;
    }

    static Thread start(String name, Body body) {
        Thread t = new Thread(() -> {
            try {
                body.run();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, name);
        t.start();
        return t;
    }

    public static void main(String[] args) throws Exception {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            synchronized (A) {
                System.err.println("hook done"); // @hook
            }
        }, "shutdown-hook"));
        Thread a = start("locker-a", () -> lockBoth(A, B));
        start("locker-b", () -> lockBoth(B, A));
        Thread holder = start("holder", JavaStacks::hold);
        while (!LOCK.isLocked()) {
            Thread.sleep(10);
        }
        Thread parker = start("parker", JavaStacks::park);
        Thread waiter = start("waiter", JavaStacks::waitForever);
        long acc = 0;
        for (int i = 0; i < 2_000_000; i++) {
            acc += hot(i);
        }
        // Everyone where they should be before `ready`.
        while (a.getState() != Thread.State.BLOCKED
                || parker.getState() != Thread.State.WAITING
                || waiter.getState() != Thread.State.WAITING
                || holder.getState() != Thread.State.TIMED_WAITING) {
            Thread.sleep(10);
        }
        System.out.println("acc=" + acc);
        System.out.println("ready");
        System.out.flush();
        a.join(); // @join
    }
}
