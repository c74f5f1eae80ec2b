using Patterns.Storage;

namespace Patterns.Postgres.Tests;

public sealed class MigrationTests : PostgresTestBase
{
    private static readonly string[] Tables = ["checkpoints", "documents", "events", "inbox", "leases", "log_head", "outbox", "schema_migrations", "snapshots", "streams"];

    [Fact]
    public async Task MigrateAsync_FromEightStoresAtOnceAndAgain_CreatesTheSchemaOnce()
    {
        var stores = Enumerable.Range(0, 8).Select(_ => CreateSut(o => o.AutoCreateSchema = false)).ToArray();
        using var start = new SemaphoreSlim(0);
        var migrations = stores.Select(store => Task.Run(async () =>
        {
            await start.WaitAsync();
            await store.MigrateAsync();
        })).ToArray();
        start.Release(stores.Length);

        await Task.WhenAll(migrations).WaitAsync(PostgresDatabase.Wait);
        await stores[0].MigrateAsync();

        (await PostgresDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{SchemaName}\".schema_migrations")).Should().Be(4);
        var tables = await PostgresDatabase.ScalarAsync<string[]>(
            $"SELECT array_agg(table_name::text ORDER BY table_name) FROM information_schema.tables WHERE table_schema = '{SchemaName}'");
        tables.Should().Equal(Tables);
        (await stores[7].AppendAsync("s", ExpectedVersion.NoStream, [TestEvents.One()])).Version.Should().Be(1);
    }

    [Fact]
    public async Task FirstUse_ManyCallsAtOnce_CreateTheSchemaOnce()
    {
        var store = CreateSut();

        var appends = Enumerable.Range(0, 8).Select(i => Task.Run(() => store.AppendAsync($"s{i}", ExpectedVersion.NoStream, [TestEvents.One()]).AsTask()));

        (await Task.WhenAll(appends).WaitAsync(PostgresDatabase.Wait)).Should().HaveCount(8);
        (await PostgresDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{SchemaName}\".schema_migrations")).Should().Be(4);
    }

    [Fact]
    public async Task AutoCreateSchemaOff_SchemaMissing_ThrowsNamingTheFix()
    {
        var store = CreateSut(o => o.AutoCreateSchema = false);

        var act = () => store.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One()]).AsTask();

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage($"*schema '{SchemaName}'*does not exist*MigrateAsync*");
        (await PostgresDatabase.ScalarAsync<long>($"SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{SchemaName}'")).Should().Be(0);

        await store.MigrateAsync();
        (await store.AppendAsync("s", ExpectedVersion.Any, [TestEvents.One()])).Version.Should().Be(1);
    }

    [Fact]
    public async Task AutoCreateSchemaOff_SchemaOutOfDate_ThrowsNamingBothVersions()
    {
        await CreateSut().MigrateAsync();
        await PostgresDatabase.ScalarAsync<int>($"WITH d AS (DELETE FROM \"{SchemaName}\".schema_migrations RETURNING 1) SELECT count(*)::int FROM d");
        var store = CreateSut(o => o.AutoCreateSchema = false);

        var act = () => store.GetHeadPositionAsync().AsTask();

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("*is at version 0*needs 4*");
    }

    [Fact]
    public async Task MigrateAsync_SchemaAtVersionOne_UpgradesInPlaceKeepingTheData()
    {
        var schema = new PostgresSchema(SchemaName);
        var q = $"\"{SchemaName}\"";
        await using (var create = DataSource.CreateCommand(
            $"{schema.CreateSchema} {schema.Migrations[0].Sql} INSERT INTO {q}.schema_migrations (version) VALUES (1); INSERT INTO {q}.checkpoints VALUES ('kept', 5, now());"))
        {
            await create.ExecuteNonQueryAsync();
        }

        var old = CreateSut(o => o.AutoCreateSchema = false);
        await old.Invoking(s => s.GetHeadPositionAsync().AsTask()).Should().ThrowAsync<InvalidOperationException>().WithMessage("*is at version 1*needs 4*");
        var store = CreateSut();
        await store.AppendAsync("kept", ExpectedVersion.NoStream, [TestEvents.One()]);

        var result = await store.CommitAsync(new UnitOfWork().Append("kept", ExpectedVersion.Exact(1), [TestEvents.One()]).Enqueue(new OutboxMessage("q", OutboxMessageKind.Publish, new byte[] { 1 })));

        result.Appends[0].Version.Should().Be(2);
        (await store.ReadOutboxAsync(0, 10)).Should().ContainSingle();
        (await store.TryAcquireLeaseAsync("relay", "a", TimeSpan.FromSeconds(1))).Should().NotBeNull();
        (await ((ICheckpointStore)store).LoadAsync("kept")).Should().Be(5, "the upgrade keeps existing rows");
        (await PostgresDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{SchemaName}\".schema_migrations")).Should().Be(4);
    }
}
