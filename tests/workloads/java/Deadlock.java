// Diagnosis: a JVM monitor deadlock and a shutdown hook that blocks on one of the monitors.
// locker-a holds A and wants B, locker-b holds B and wants A. On SIGTERM the JVM runs the
// shutdown hook, which synchronizes on A and blocks: the JVM never exits. Expected after
// SIGTERM: flagged locker-a, locker-b, shutdown-hook (role app); the JVM's own threads (GC,
// compiler, VM thread, signal dispatcher, ...) are role runtime and not flagged.
public class Deadlock {
    static final Object A = new Object();
    static final Object B = new Object();

    static void pause(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static void lockBoth(Object first, Object second) {
        synchronized (first) {
            pause(200);
            synchronized (second) {
                System.err.println("unreachable");
            }
        }
    }

    public static void main(String[] args) {
        Thread a = new Thread(() -> lockBoth(A, B), "locker-a");
        Thread b = new Thread(() -> lockBoth(B, A), "locker-b");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            synchronized (A) {
                System.err.println("hook done");
            }
        }, "shutdown-hook"));
        a.start();
        b.start();
        pause(600);
        if (args.length > 0 && args[0].equals("--ready")) {
            System.out.println("ready");
            System.out.flush();
        }
        // main returns; the JVM waits for the non-daemon lockers (DestroyJavaVM).
    }
}
