// Hibernate 3.6 (Debian's libhibernate3-java) against soft-delete tables,
// on the cluster that preloads pg_invariants and on the one that does not
// (PGI_HOST, PGI_PRELOAD_PORT, PGI_PORT), with an @Version column:
// - session.delete of a loaded entity succeeds when preloaded (Postgres
//   reports DELETE 1); without preloading it reports DELETE 0 and Hibernate
//   raises StaleStateException; the row is never gone;
// - a stale save (the entity loaded, deleted by another session, then
//   edited and flushed) raises StaleStateException in both modes: Hibernate
//   writes every column (deleted_at = NULL included) and the UPDATE matches
//   no row; the row stays deleted.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import javax.persistence.Column;
import javax.persistence.Entity;
import javax.persistence.Id;
import javax.persistence.Table;
import javax.persistence.Temporal;
import javax.persistence.TemporalType;
import javax.persistence.Version;
import org.hibernate.Session;
import org.hibernate.SessionFactory;
import org.hibernate.StaleStateException;
import org.hibernate.cfg.Configuration;

public class HibernateSoftDelete {
    @Entity
    @Table(name = "vparent")
    public static class Parent {
        @Id public Integer id;
        @Column public String name;
        @Version public Integer version;
        @Column(name = "deleted_at") @Temporal(TemporalType.TIMESTAMP) public Date deletedAt;
    }

    static final String HOST = System.getenv().getOrDefault("PGI_HOST", "127.0.0.1");
    static final String DB = "pgi_orm_hibernate";

    static String url(int port, String db) {
        return "jdbc:postgresql://" + HOST + ":" + port + "/" + db + "?user=postgres";
    }

    static boolean deleted(Connection c, int id) throws Exception {
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT deleted_at IS NOT NULL FROM vparent WHERE id = " + id)) {
            return r.next() && r.getBoolean(1);
        }
    }

    public static void main(String[] args) throws Exception {
        List<String> failures = new ArrayList<>();
        int checks = 0;
        String[][] modes = {
            {"preload", System.getenv().getOrDefault("PGI_PRELOAD_PORT", "28919")},
            {"trigger", System.getenv().getOrDefault("PGI_PORT", "28916")},
        };
        for (String[] m : modes) {
            String mode = m[0];
            int port = Integer.parseInt(m[1]);
            try (Connection admin = DriverManager.getConnection(url(port, "postgres"));
                 Statement s = admin.createStatement()) {
                s.execute("DROP DATABASE IF EXISTS " + DB + " WITH (FORCE)");
                s.execute("CREATE DATABASE " + DB);
            }
            Connection other = DriverManager.getConnection(url(port, DB));
            try (Statement s = other.createStatement()) {
                s.execute("CREATE EXTENSION pg_invariants");
                s.execute("CREATE TABLE vparent (id int PRIMARY KEY, name text, version int NOT NULL, deleted_at timestamptz)");
                s.execute("INSERT INTO vparent VALUES (1, 'one', 0, NULL), (2, 'two', 0, NULL)");
                s.execute("SELECT invariants.enable_soft_delete('vparent')");
            }
            SessionFactory factory = new Configuration()
                .setProperty("hibernate.dialect", "org.hibernate.dialect.PostgreSQLDialect")
                .setProperty("hibernate.connection.driver_class", "org.postgresql.Driver")
                .setProperty("hibernate.connection.url", url(port, DB))
                .setProperty("hibernate.jdbc.batch_size", "0")
                .addAnnotatedClass(Parent.class)
                .buildSessionFactory();

            checks++;
            Session session = factory.openSession();
            session.beginTransaction();
            try {
                session.delete(session.get(Parent.class, 1));
                session.getTransaction().commit();
                if (mode.equals("trigger")) failures.add(mode + ": delete raised nothing for DELETE 0");
            } catch (StaleStateException e) {
                session.getTransaction().rollback();
                if (mode.equals("preload")) failures.add(mode + ": delete raised " + e);
            }
            session.close();
            try (Statement s = other.createStatement();
                 ResultSet r = s.executeQuery("SELECT count(*) FROM vparent WHERE id = 1")) {
                if (!r.next() || r.getLong(1) != 1) failures.add(mode + ": the row is gone");
            }

            checks++;
            session = factory.openSession();
            session.beginTransaction();
            Parent p = (Parent) session.get(Parent.class, 2);
            try (Statement s = other.createStatement()) {
                s.execute("DELETE FROM vparent WHERE id = 2");
            }
            p.name = "edited";
            try {
                session.getTransaction().commit();
                failures.add(mode + ": the stale save committed");
            } catch (StaleStateException e) {
                session.getTransaction().rollback();
            }
            session.close();
            if (!deleted(other, 2)) failures.add(mode + ": the stale save brought the row back");
            factory.close();
            other.close();
        }
        for (String f : failures) System.out.println("hibernate: FAILED: " + f);
        System.out.println("hibernate: " + (checks - failures.size()) + " passed, " + failures.size() + " failed");
        System.exit(failures.isEmpty() ? 0 : 1);
    }
}
