using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;
using Patterns.Queues;

namespace Patterns.Etl.Tests;

/// <summary>A multicast from a queue into PostgreSQL branches: each branch records its messages in its own write's transaction.</summary>
public sealed partial class TransportSourceTests
{
    [Fact]
    public async Task AMulticastIntoTwoPostgresBranchesOfOneDatabase_ABranchsSinkFailsAfterTheOtherCommitted_TheRetryLoadsEachRowOncePerBranch()
    {
        // Both branches write to one PostgreSQL database (one consumed-id table, keys job/a and job/b). Branch 'a'
        // commits a batch, then branch 'b''s sink fails on it: the next run loads into 'a' only what 'a' lacks and into
        // 'b' everything; then the same message sent again is skipped by both.
        await Pg.RequireAsync();
        var schema = await Pg.NewSchemaAsync();
        try
        {
            var queue = "branch-pg-" + Guid.NewGuid().ToString("N");
            using var host = await StartAsync(queue);
            var sender = host.Services.GetRequiredService<IQueueSender>();
            var ids = new Guid[5];
            for (var id = 1; id <= 5; id++)
            {
                ids[id - 1] = Guid.NewGuid();
                await sender.SendAsync(queue, new Reading(id, id), new MessageOptions { MessageId = ids[id - 1] });
            }

            var (a, b) = (Postgres.Append<Reading>(Pg.ConnectionString, $"{schema}.readings_a"), Postgres.Append<Reading>(Pg.ConnectionString, $"{schema}.readings_b"));
            EtlPipeline<Reading> Pipeline(EtlSink<Reading> toA, EtlSink<Reading> toB) => EtlTransport.FromQueue<Reading>(host.Services, queue)
                .Multicast("branch-pg", branch => branch.To("a", toA), branch => branch.To("b", toB));

            await HookSink.FailBranchBAfterBranchACommittedAsync(Pipeline, a, b);
            var inA = await Pg.ScalarAsync($"SELECT count(*) FROM {schema}.readings_a");
            inA.Should().BePositive("branch 'a' committed the batch before 'b' failed");

            async Task RunUntilBGetsAsync(int rows)
            {
                using var stop = new CancellationTokenSource(Wait);
                var retry = Pipeline(a, HookSink.StoppingAfter(b, rows, stop));
                (await retry.RunAsync(new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
            }

            await RunUntilBGetsAsync(5);

            // Message 3 sent again with its id, then a new one: both branches recorded message 3, so it is skipped.
            await sender.SendAsync(queue, new Reading(3, 3), new MessageOptions { MessageId = ids[2] });
            await sender.SendAsync(queue, new Reading(6, 6));
            await RunUntilBGetsAsync(1);

            foreach (var table in new[] { "readings_a", "readings_b" })
            {
                (await Pg.ScalarAsync($"SELECT count(*) FROM {schema}.{table}")).Should().Be(6, $"{table} holds each row exactly once");
                (await Pg.ScalarAsync($"SELECT count(DISTINCT id) FROM {schema}.{table}")).Should().Be(6);
            }

            (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty();
        }
        finally
        {
            await Pg.DropSchemaAsync(schema);
        }
    }
}
