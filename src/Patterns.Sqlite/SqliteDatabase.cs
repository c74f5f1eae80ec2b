using System.Globalization;
using Microsoft.Data.Sqlite;

namespace Patterns.Sqlite;

/// <summary>Opening connections, the journal mode and the schema.</summary>
internal static class SqliteDatabase
{
    /// <summary>Opens a connection with the busy timeout applied, turning "cannot open" into an error that names the file.</summary>
    public static SqliteConnection OpenConnection(string connectionString, SqliteEventStoreOptions options)
    {
        var connection = new SqliteConnection(connectionString);
        try
        {
            connection.Open();
            SqliteRows.Execute(connection, string.Create(CultureInfo.InvariantCulture, $"PRAGMA busy_timeout = {(long)options.BusyTimeout.TotalMilliseconds}"));
            return connection;
        }
        catch (SqliteException ex)
        {
            connection.Dispose();
            throw new InvalidOperationException($"Cannot open the SQLite database '{connection.DataSource}': {ex.Message} (does its directory exist and is it writable?)", ex);
        }
    }

    /// <summary>Switches the database to WAL (persistent in the file), failing when the file system does not allow it.</summary>
    public static void EnableWal(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode = WAL";
        var mode = command.ExecuteScalar() as string;
        if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidOperationException($"The SQLite database '{connection.DataSource}' cannot use WAL journal mode (it reports '{mode}'); the event store needs WAL for concurrent readers.");
        }
    }

    /// <summary>Creates every table and index that is missing (idempotent) and checks the schema version.</summary>
    /// <exception cref="InvalidOperationException">The database was created by a newer version with a schema this one does not know.</exception>
    public static void Migrate(SqliteConnection connection, SqliteSql sql)
    {
        SqliteRows.Execute(connection, "BEGIN IMMEDIATE");
        try
        {
            CreateSchema(connection, sql);
            SqliteRows.Execute(connection, "COMMIT");
        }
        catch
        {
            if (!connection.IsAutocommit())
            {
                SqliteRows.Execute(connection, "ROLLBACK");
            }

            throw;
        }
    }

    /// <summary>Runs the idempotent CREATE statements and checks the schema version, inside the caller's transaction.</summary>
    public static void CreateSchema(SqliteConnection connection, SqliteSql sql)
    {
        SqliteRows.Execute(connection, sql.CreateSchema);
        using var version = connection.CreateCommand();
        version.CommandText = sql.SelectSchemaVersion;
        var found = Convert.ToInt64(version.ExecuteScalar(), CultureInfo.InvariantCulture);
        if (found != SqliteSql.SchemaVersion)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"The SQLite database '{connection.DataSource}' has event store schema version {found}, but this version of Patterns.Sqlite uses version {SqliteSql.SchemaVersion}; upgrade Patterns.Sqlite, or use another file or table prefix."));
        }
    }

    /// <summary>Gets whether no transaction is open on the connection.</summary>
    public static bool IsAutocommit(this SqliteConnection connection) =>
        SQLitePCL.raw.sqlite3_get_autocommit(connection.Handle) != 0;
}
