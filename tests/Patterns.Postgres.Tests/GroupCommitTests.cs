using Npgsql;
using Patterns.Storage;

namespace Patterns.Postgres.Tests;

/// <summary>
/// Group commit: appends that arrive while another append runs are committed together, each with the outcome it
/// would have had alone. The tests hold the running append on a row lock taken by a second connection, so the
/// queue is known before the group runs.
/// </summary>
public sealed class GroupCommitTests : PostgresTestBase
{
    [Fact]
    public async Task AppendAsync_QueuedBehindARunningAppend_CommitsAsOneGroupWithEachOutcomeItsOwn()
    {
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        var existing = TestEvents.Many(2);
        var original = await store.AppendAsync("existing", ExpectedVersion.NoStream, existing);
        await store.AppendAsync("deleted", ExpectedVersion.NoStream, [TestEvents.One()]);
        await store.DeleteStreamAsync("deleted", ExpectedVersion.Any);
        var head = await store.GetHeadPositionAsync();

        await using var blocking = await HoldStreamRowAsync("blocker");
        var leader = store.AppendAsync("blocker", ExpectedVersion.Any, [TestEvents.One()]).AsTask();
        var alphaFirst = TestEvents.One();
        var zeta = store.AppendAsync("zeta", ExpectedVersion.NoStream, TestEvents.Many(2)).AsTask();
        var alpha1 = store.AppendAsync("alpha", ExpectedVersion.NoStream, [alphaFirst]).AsTask();
        var alpha2 = store.AppendAsync("alpha", ExpectedVersion.Exact(1), [TestEvents.One()]).AsTask();
        var wrongVersion = store.AppendAsync("existing", ExpectedVersion.Exact(5), [TestEvents.One()]).AsTask();
        var deleted = store.AppendAsync("deleted", ExpectedVersion.Any, [TestEvents.One()]).AsTask();
        var retry = store.AppendAsync("existing", ExpectedVersion.NoStream, existing).AsTask();
        var duplicate = store.AppendAsync("existing", ExpectedVersion.Any, [TestEvents.One(), existing[1]]).AsTask();
        var retryInGroup = store.AppendAsync("alpha", ExpectedVersion.Any, [alphaFirst]).AsTask();
        using var cancel = new CancellationTokenSource();
        var cancelled = store.AppendAsync("omega", ExpectedVersion.Any, [TestEvents.One()], cancellationToken: cancel.Token).AsTask();

        store.QueuedAppends.Should().Be(9, "every append after the running one waits for the next group");
        await cancel.CancelAsync();
        store.QueuedAppends.Should().Be(8, "a cancelled append leaves the queue before its group runs");
        await blocking.CommitAsync();

        (await leader.WaitAsync(PostgresDatabase.Wait)).FirstPosition.Should().Be(head + 1);
        var zetaResult = await zeta.WaitAsync(PostgresDatabase.Wait);
        var alpha1Result = await alpha1.WaitAsync(PostgresDatabase.Wait);
        var alpha2Result = await alpha2.WaitAsync(PostgresDatabase.Wait);
        alpha1Result.Version.Should().Be(1);
        alpha2Result.Version.Should().Be(2);
        zetaResult.Version.Should().Be(2);
        (await wrongVersion.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<WrongExpectedVersionException>()).Which.Actual.Should().Be(2);
        await deleted.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<StreamDeletedException>();
        (await retry.WaitAsync(PostgresDatabase.Wait)).Should().Be(original);
        (await duplicate.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<DuplicateEventException>()).Which.EventId.Should().Be(existing[1].EventId);
        (await retryInGroup.WaitAsync(PostgresDatabase.Wait)).Should().Be(alpha1Result, "an exact retry of an append earlier in the same group returns that append's result");
        await cancelled.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<OperationCanceledException>();

        store.Groups.Should().Be(1);
        var log = await store.ReadAllAsync(head).ToListAsync();
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, 5).Select(i => head + i), "one group adds a contiguous run of positions");
        log.Select(e => e.StreamId).Should().Equal("blocker", "alpha", "alpha", "zeta", "zeta");
        (await store.GetStreamStateAsync("omega")).Version.Should().Be(0);
        (await store.GetStreamStateAsync("existing")).Version.Should().Be(2);
        (await store.GetHeadPositionAsync()).Should().Be(head + 5);
    }

    [Fact]
    public async Task AppendAsync_GroupFailsAsAWhole_EachAppendRunsAloneWithItsOwnOutcome()
    {
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);

        // Incompressible and longer than a b-tree index entry may be: PostgreSQL refuses the row.
        var hugeId = string.Concat(Enumerable.Range(0, 400).Select(_ => Guid.NewGuid().ToString("N")));
        await using var blocking = await HoldStreamRowAsync("blocker");
        var leader = store.AppendAsync("blocker", ExpectedVersion.Any, [TestEvents.One()]).AsTask();
        var good = store.AppendAsync("good", ExpectedVersion.NoStream, [TestEvents.One()]).AsTask();
        var bad = store.AppendAsync(hugeId, ExpectedVersion.NoStream, [TestEvents.One()]).AsTask();
        var alsoGood = store.AppendAsync("good", ExpectedVersion.Exact(1), [TestEvents.One()]).AsTask();
        store.QueuedAppends.Should().Be(3);
        await blocking.CommitAsync();

        await leader.WaitAsync(PostgresDatabase.Wait);
        (await good.WaitAsync(PostgresDatabase.Wait)).Version.Should().Be(1);
        (await alsoGood.WaitAsync(PostgresDatabase.Wait)).Version.Should().Be(2);
        (await bad.Invoking(t => t.WaitAsync(PostgresDatabase.Wait)).Should().ThrowAsync<PostgresException>()).Which.SqlState.Should().Be(PostgresErrorCodes.ProgramLimitExceeded);
        store.Groups.Should().Be(0, "the group failed and its appends ran one by one");
        (await store.ReadAllAsync().ToListAsync()).Select(e => e.Position).Should().Equal(1, 2, 3, 4);
    }

    [Fact]
    public async Task AppendAsync_SixteenConcurrentWriters_ShareCommits()
    {
        var store = CreateSut();
        await store.MigrateAsync();

        await Task.WhenAll(Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < 20; i++)
            {
                await store.AppendAsync($"w{w}", ExpectedVersion.Exact(i), [TestEvents.One()]);
            }
        }))).WaitAsync(PostgresDatabase.Wait);

        store.Groups.Should().BeGreaterThan(0, "sixteen writers cannot all find the store idle");
        var log = await store.ReadAllAsync().ToListAsync();
        log.Select(e => e.Position).Should().Equal(Enumerable.Range(1, 320).Select(i => (long)i));
        log.GroupBy(e => e.StreamId).Should().OnlyContain(s => s.Select(e => e.Version).SequenceEqual(Enumerable.Range(1, 20).Select(v => (long)v)));
    }

    /// <summary>
    /// A rolling deploy: a process of an earlier version commits its groups with <c>append_group</c> (migration 1) while
    /// this one uses <c>commit_units</c>. Both take stream rows in stream id order (a missing one created in its turn), then
    /// the position lock, so a group of each on the same streams, one waiting behind the other, never deadlocks: both
    /// commit as groups, one after the other, with gap-free positions.
    /// </summary>
    [Fact]
    public async Task AppendAsync_GroupAlongsideAnEarlierVersionsAppendGroup_TakesRowsInTheSameOrder()
    {
        var store = CreateSut();
        await store.AppendAsync("blocker", ExpectedVersion.NoStream, [TestEvents.One()]);
        await store.AppendAsync("d-a", ExpectedVersion.NoStream, [TestEvents.One()]);
        await store.AppendAsync("d-b", ExpectedVersion.NoStream, [TestEvents.One()]);
        var head = await store.GetHeadPositionAsync();

        await using var holder = await HoldStreamRowAsync("d-a");
        var earlier = EarlierVersionAppendGroupAsync(["d-a", "d-b", "d-c"], [-1, -1, 0]);
        await WaitForLockWaitAsync("append_group");

        await using (var blocking = await HoldStreamRowAsync("blocker"))
        {
            var leader = store.AppendAsync("blocker", ExpectedVersion.Any, [TestEvents.One()]).AsTask();
            var appends = new[] { "d-c", "d-b", "d-a" }.Select(s => store.AppendAsync(s, ExpectedVersion.Any, [TestEvents.One()]).AsTask()).ToArray();
            store.QueuedAppends.Should().Be(3);
            await blocking.CommitAsync();
            await leader.WaitAsync(PostgresDatabase.Wait);
            await WaitForLockWaitAsync("commit_units");
            await holder.CommitAsync();

            (await earlier.WaitAsync(PostgresDatabase.Wait)).Should().Equal((0, 2L), (0, 2L), (0, 1L));
            (await Task.WhenAll(appends).WaitAsync(PostgresDatabase.Wait)).Select(r => (r.StreamId, r.Version)).Should().Equal(("d-c", 2L), ("d-b", 3L), ("d-a", 3L));
        }

        store.Groups.Should().Be(1, "the group committed as one, without a deadlock and a retry one by one");
        (await store.ReadAllAsync(head).ToListAsync()).Select(e => e.Position).Should().Equal(Enumerable.Range(1, 7).Select(i => head + i));
    }

    /// <summary>Calls <c>append_group</c> as a process of an earlier version does: one event per append, streams in ordinal order.</summary>
    private async Task<(int Status, long Version)[]> EarlierVersionAppendGroupAsync(string[] streamIds, long[] expected)
    {
        await using var connection = await DataSource.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            $"SELECT status, new_version FROM \"{SchemaName}\".append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)", connection);
        var n = streamIds.Length;
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = streamIds });
        command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = expected });
        command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = Enumerable.Repeat(1, n).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<Guid[]> { TypedValue = Enumerable.Range(0, n).Select(_ => Guid.NewGuid()).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = Enumerable.Repeat("thing-happened", n).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<byte[][]> { TypedValue = Enumerable.Range(0, n).Select(_ => "{}"u8.ToArray()).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<byte[]?[]> { TypedValue = new byte[]?[n], NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Array | NpgsqlTypes.NpgsqlDbType.Bytea });
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = new string?[n], NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Array | NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = new string?[n], NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Array | NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<DateTime[]> { TypedValue = Enumerable.Repeat(TestEvents.Epoch.UtcDateTime, n).ToArray() });
        var outcomes = new List<(int, long)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            outcomes.Add((reader.GetInt32(0), reader.GetInt64(1)));
        }

        return [.. outcomes];
    }

    /// <summary>Waits until a call of <paramref name="function"/> in this test's schema waits for a lock.</summary>
    private async Task WaitForLockWaitAsync(string function)
    {
        var sql = $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{SchemaName}%.{function}(%'";
        using var timeout = new CancellationTokenSource(PostgresDatabase.Wait);
        while (await PostgresDatabase.ScalarAsync<long>(sql) == 0)
        {
            await Task.Delay(10, timeout.Token);
        }
    }
}
