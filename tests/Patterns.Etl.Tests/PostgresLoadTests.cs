using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class PostgresLoadTests : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private string _schema = string.Empty;

    public async ValueTask InitializeAsync()
    {
        await Pg.RequireAsync();
        _schema = await Pg.NewSchemaAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_schema.Length > 0)
        {
            await Pg.DropSchemaAsync(_schema);
        }

        _dir.Dispose();
    }

    [Fact]
    public async Task CsvToPostgres_Copy_LoadsEveryRowExactly()
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 5_000);

        var result = await Etl.From(Csv.Read<Order>(csv)).To(Postgres.Append<Order>(Pg.ConnectionString, $"{_schema}.orders"), "orders").RunAsync(new EtlRunOptions { BatchSize = 1_000 });

        result.RowsInserted.Should().Be(5_000);
        result.Bookmark.Should().Be(new EtlBookmark(5_000, 5_001, null, true));
        (await Db.ReadPostgresAsync(await Pg.RequireAsync(), $"{_schema}.orders")).Should().Equal(SqliteLoadTests.Generated(5_000));
        (await Pg.ScalarAsync($"SELECT \"offset\" FROM {_schema}.patterns_etl_bookmarks WHERE job = 'orders'")).Should().Be(5_000);
    }

    [Fact]
    public async Task PostgresQuery_Watermark_LoadsOnlyNewRowsIntoSqlite()
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 3_000);
        await Etl.From(Csv.Read<Order>(csv)).To(Postgres.Append<Order>(Pg.ConnectionString, $"{_schema}.orders")).RunAsync();
        var source = Postgres.Query(await Pg.RequireAsync(), $"SELECT * FROM {_schema}.orders WHERE id > @watermark ORDER BY id", Order.Schema, watermark: "id", initialWatermark: 0);
        var pipeline = Etl.From(source).To(Sqlite.Merge<Order>(_dir.Sqlite(), "orders", "id"), "pg-to-sqlite");

        var first = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 700 });
        await using (var command = (await Pg.RequireAsync()).CreateCommand($"INSERT INTO {_schema}.orders SELECT id + 3000, customer_id, amount, placed_at, status, region, product, channel, note, email FROM {_schema}.orders WHERE id <= 250"))
        {
            await command.ExecuteNonQueryAsync();
        }

        var second = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 700 });

        first.RowsInserted.Should().Be(3_000);
        first.Bookmark!.Watermark.Should().Be("3000");
        first.Status.Should().Be(EtlRunStatus.Completed);
        second.RowsRead.Should().Be(250, "the watermark source resumes after id 3000");
        second.RowsInserted.Should().Be(250);
        Db.ScalarSqlite(_dir.Sqlite(), "SELECT max(id) FROM orders").Should().Be(3_250);
    }

    [Fact]
    public async Task Merge_FullMode_MatchesInMemoryReference()
    {
        var table = $"{_schema}.orders";
        var first = _dir.File("v1.csv");
        OrderData.Write(first, 2_000);
        var sink = Postgres.Full<Order>(Pg.ConnectionString, table, "id");
        (await Etl.From(Csv.Read<Order>(first)).To(sink, "full").RunAsync(new EtlRunOptions { BatchSize = 300 })).RowsInserted.Should().Be(2_000);
        var reference = SqliteLoadTests.Generated(2_000).ToDictionary(o => o.Id);
        var second = _dir.File("v2.csv");
        int updated = 0, deleted = 0;
        OrderData.Write(second, 3_000, change: (i, id, order) =>
        {
            if (id > 2_000)
            {
                return order;
            }

            if (id % 20 == 0)
            {
                deleted++;
                return null;
            }

            if (id % 20 < 10)
            {
                updated++;
                return reference[id] with { Region = "moved" };
            }

            return reference[id];
        });
        var expected = (await Db.ReadCsvAsync(second)).OrderBy(o => o.Id).ToList();

        var result = await Etl.From(Csv.Read<Order>(second)).To(sink, "full").RunAsync(new EtlRunOptions { BatchSize = 300, Partition = "v2" });

        result.RowsInserted.Should().Be(1_000);
        result.RowsUpdated.Should().Be(updated);
        result.RowsDeleted.Should().Be(deleted);
        (await Db.ReadPostgresAsync(await Pg.RequireAsync(), table)).Should().Equal(expected);
        var again = await Etl.From(Csv.Read<Order>(second)).To(sink, "full").RunAsync(new EtlRunOptions { Partition = "v2-again" });
        again.RowsChanged.Should().Be(0);
    }

    [Fact]
    public async Task Merge_DeleteMarkers_DeleteUpdateAndInsert_MatchInMemoryReference_AndARerunChangesNothing()
    {
        var table = $"{_schema}.orders";
        var source = await Pg.RequireAsync();

        await DeleteDelta.MergeAndRerunAsync(Postgres.Merge<Order>(Pg.ConnectionString, table, o => o.Id, DeleteDelta.IsDelete), _dir.File("delta.csv"), () => Db.ReadPostgresAsync(source, table));
    }

    [Fact]
    public async Task Merge_DeleteMarkers_StopThenResume_DeletesEachKeyOnce()
    {
        var table = $"{_schema}.orders";
        var source = await Pg.RequireAsync();

        await DeleteDelta.StopThenResumeAsync(
            Postgres.Merge<Order>(Pg.ConnectionString, table, o => o.Id, DeleteDelta.IsDelete),
            _dir.File("delta.csv"),
            () => Db.ReadPostgresAsync(source, table),
            () => Pg.ScalarAsync($"SELECT \"offset\" FROM {_schema}.patterns_etl_bookmarks WHERE job = 'delta'"),
            () => Pg.ScalarAsync($"SELECT count(*) FROM {table} WHERE id <= 2000"));
    }

    [Fact]
    public async Task Merge_DuplicateKeysInOneBatch_LastRowWins()
    {
        var rows = SqliteLoadTests.Generated(10);
        var input = rows.Concat(rows.Take(3).Select(o => o with { Status = "later" })).ToList();

        var result = await Etl.From(input).To(Postgres.Merge<Order>(Pg.ConnectionString, $"{_schema}.orders", "id")).RunAsync();

        result.RowsInserted.Should().Be(10);
        (await Pg.ScalarAsync($"SELECT count(*) FROM {_schema}.orders WHERE status = 'later'")).Should().Be(3);
    }

    [Fact]
    public async Task MalformedRows_AreQuarantinedInTheTargetDatabase()
    {
        var csv = _dir.File("bad.csv");
        var bad = OrderData.Write(csv, 2_000, badEvery: 100);

        var result = await Etl.From(Csv.Read<Order>(csv)).To(Postgres.Append<Order>(Pg.ConnectionString, $"{_schema}.orders")).RunAsync(new EtlRunOptions { BatchSize = 500 });

        result.RowsQuarantined.Should().Be(20);
        result.RowsInserted.Should().Be(1_980);
        var lines = File.ReadAllLines(csv);
        await using var command = (await Pg.RequireAsync()).CreateCommand($"SELECT line, raw FROM {_schema}.patterns_etl_quarantine ORDER BY line");
        await using var reader = await command.ExecuteReaderAsync();
        var found = new List<long>();
        while (await reader.ReadAsync())
        {
            found.Add(reader.GetInt64(0));
            reader.GetString(1).Should().Be(lines[reader.GetInt64(0) - 1]);
        }

        found.Should().Equal(bad);
    }

    [Fact]
    public async Task AWriterOpens_AsARoleThatDoesNotOwnTheTables_OnceTheyExist()
    {
        // CREATE TABLE / INDEX IF NOT EXISTS on existing objects would need the schema's CREATE privilege and the
        // table's ownership: a writer creates only what is missing.
        var table = $"{_schema}.orders";
        var rows = SqliteLoadTests.Generated(10);
        (await Etl.From(rows.Take(5)).To(Postgres.Append<Order>(Pg.ConnectionString, table), "owner").RunAsync()).RowsInserted.Should().Be(5);
        var role = "etl_role_" + Guid.NewGuid().ToString("N")[..12];
        var password = Guid.NewGuid().ToString("N");
        await ExecuteAsync($"CREATE ROLE {role} LOGIN PASSWORD '{password}'");
        try
        {
            await ExecuteAsync($"GRANT USAGE ON SCHEMA {_schema} TO {role}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {_schema} TO {role}");
            var asRole = new Npgsql.NpgsqlConnectionStringBuilder(Pg.ConnectionString) { Username = role, Password = password, Pooling = false }.ConnectionString;

            var result = await Etl.From(rows.Skip(5)).To(Postgres.Append<Order>(asRole, table), "not-owner").RunAsync();

            result.RowsInserted.Should().Be(5);
            (await Pg.ScalarAsync($"SELECT count(*) FROM {table}")).Should().Be(10);
            (await Pg.ScalarAsync($"SELECT \"offset\" FROM {_schema}.patterns_etl_bookmarks WHERE job = 'not-owner'")).Should().Be(5);
        }
        finally
        {
            await ExecuteAsync($"DROP OWNED BY {role}; DROP ROLE {role}");
        }
    }

    private static async Task ExecuteAsync(string sql)
    {
        await using var command = (await Pg.RequireAsync()).CreateCommand(sql);
        await command.ExecuteNonQueryAsync();
    }
}
