// Makes a broker's ACLs exactly those of an ACL file rendered by `hookline acls` (lines
// `User:NAME RESOURCE_TYPE PATTERN NAME OPERATION`, `#` comments): the missing ones are
// created and every other ACL is deleted, in one JVM and two requests (kafka-acls.sh would
// start a JVM per principal). Run by scripts/kafka.sh as a single-file source program with
// Kafka's jars on the class path:
//   java -cp 'LIBS/*' scripts/kafka/Acls.java ADMIN_PROPERTIES BOOTSTRAP ACL_FILE
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Acls {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Acls ADMIN_PROPERTIES BOOTSTRAP ACL_FILE");
            System.exit(2);
        }
        Properties props = new Properties();
        try (var in = Files.newInputStream(Path.of(args[0]))) {
            props.load(in);
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");
        Set<AclBinding> wanted = new HashSet<>();
        int lineNo = 0;
        for (String line : Files.readAllLines(Path.of(args[2]))) {
            lineNo++;
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] f = line.split("\\s+");
            if (f.length != 5 || !f[0].startsWith("User:")) {
                System.err.printf("%s:%d: expected 'User:NAME TYPE PATTERN NAME OPERATION'%n", args[2], lineNo);
                System.exit(2);
            }
            wanted.add(new AclBinding(
                new ResourcePattern(ResourceType.fromString(f[1]), f[3], PatternType.fromString(f[2])),
                new AccessControlEntry(f[0], "*", AclOperation.fromString(f[4]), AclPermissionType.ALLOW)));
        }
        for (AclBinding b : wanted) {
            if (b.isUnknown()) {
                System.err.println("unknown resource type, pattern or operation: " + b);
                System.exit(2);
            }
        }
        try (Admin admin = Admin.create(props)) {
            Set<AclBinding> present = new HashSet<>(admin.describeAcls(AclBindingFilter.ANY).values().get(60, TimeUnit.SECONDS));
            List<AclBindingFilter> stale = new ArrayList<>();
            for (AclBinding b : present) {
                if (!wanted.contains(b)) {
                    stale.add(b.toFilter());
                }
            }
            List<AclBinding> missing = new ArrayList<>();
            for (AclBinding b : wanted) {
                if (!present.contains(b)) {
                    missing.add(b);
                }
            }
            if (!stale.isEmpty()) {
                admin.deleteAcls(stale).all().get(60, TimeUnit.SECONDS);
            }
            if (!missing.isEmpty()) {
                admin.createAcls(missing).all().get(60, TimeUnit.SECONDS);
            }
            System.err.printf("kafka.sh: ACLs: %d in force (%d added, %d removed)%n", wanted.size(), missing.size(), stale.size());
        }
    }
}
