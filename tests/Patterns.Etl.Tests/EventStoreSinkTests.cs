using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Etl.Samples;
using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Etl.Tests;

public sealed class EventStoreSinkTests : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private string? _schema;

    public enum Store
    {
        InMemory,
        Sqlite,
        Postgres,
    }

    public enum Failure
    {
        BeforeCommit,
        AfterCommit,
    }

    public ValueTask InitializeAsync() => default;

    public async ValueTask DisposeAsync()
    {
        if (_schema is not null)
        {
            await Pg.DropSchemaAsync(_schema);
        }

        _dir.Dispose();
    }

    [Theory]
    [InlineData(Store.InMemory)]
    [InlineData(Store.Sqlite)]
    [InlineData(Store.Postgres)]
    public async Task EachRowBecomesAnEvent_InItsStream_WithTheBookmarkAndQuarantineInTheSameUnit(Store store)
    {
        var csv = _dir.File("orders.csv");
        var bad = OrderData.Write(csv, 1_000, badEvery: 50);
        using var host = await StartAsync(store);
        var pipeline = Pipeline(host.Services, csv);

        var result = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 120 });
        var rerun = await pipeline.RunAsync();

        var expected = await Db.ReadCsvAsync(csv);
        result.RowsLoaded.Should().Be(980);
        result.RowsInserted.Should().Be(980);
        result.RowsQuarantined.Should().Be(bad.Count);
        var events = await ReadAllAsync(host.Services);
        events.Select(e => ((OrderImported)e.Data).Id).Should().Equal(expected.Select(o => o.Id));
        events.Should().OnlyContain(e => e.StreamId == StreamOf(((OrderImported)e.Data).CustomerId) && e.EventType == "etl.order-imported");
        foreach (var stream in expected.GroupBy(o => StreamOf(o.CustomerId)).Take(5))
        {
            var read = await host.Services.GetRequiredService<IEventStore>().ReadStreamAsync(stream.Key).ToListAsync();
            read.Select(e => ((OrderImported)e.Data).Id).Should().Equal(stream.Select(o => o.Id));
        }

        var documents = host.Services.GetRequiredService<IDocumentStorage>();
        var bookmark = JsonDocument.Parse((await documents.GetAsync(EtlEventStore.BookmarkCollection, "orders-to-events|"))!).RootElement;
        bookmark.GetProperty("offset").GetInt64().Should().Be(1_000);
        bookmark.GetProperty("completed").GetBoolean().Should().BeTrue();
        var quarantined = await documents.ListAsync(EtlEventStore.QuarantineCollection).ToListAsync();
        quarantined.Select(q => JsonDocument.Parse(q.Value).RootElement.GetProperty("line").GetInt64()).Should().Equal(bad);

        rerun.Status.Should().Be(EtlRunStatus.AlreadyCompleted);
        (await ReadAllAsync(host.Services)).Should().HaveCount(980);
        (await documents.ListAsync(EtlEventStore.QuarantineCollection).ToListAsync()).Should().HaveCount(bad.Count);
    }

    [Theory]
    [InlineData(Store.InMemory, Failure.BeforeCommit)]
    [InlineData(Store.InMemory, Failure.AfterCommit)]
    [InlineData(Store.Sqlite, Failure.BeforeCommit)]
    [InlineData(Store.Sqlite, Failure.AfterCommit)]
    [InlineData(Store.Postgres, Failure.BeforeCommit)]
    [InlineData(Store.Postgres, Failure.AfterCommit)]
    public async Task RestartAfterAFailedCommit_AppendsEachRowExactlyOnce(Store store, Failure failure)
    {
        var csv = _dir.File("orders.csv");
        OrderData.Write(csv, 1_000);
        using var host = await StartAsync(store);
        var flaky = new FlakyServices(host.Services, failOnCommit: 3, failure);

        var first = () => Pipeline(flaky, csv).RunAsync(new EtlRunOptions { BatchSize = 100 });

        await first.Should().ThrowAsync<IOException>().WithMessage("injected failure*");
        var committedBatches = failure == Failure.BeforeCommit ? 2 : 3;
        (await ReadAllAsync(host.Services)).Should().HaveCount(committedBatches * 100);

        var second = await Pipeline(host.Services, csv).RunAsync(new EtlRunOptions { BatchSize = 100 });

        second.Status.Should().Be(EtlRunStatus.Completed);
        second.RowsRead.Should().Be(1_000 - (committedBatches * 100), "the restart resumes after the last committed batch");
        (await ReadAllAsync(host.Services)).Select(e => ((OrderImported)e.Data).Id).Should().Equal(Enumerable.Range(1, 1_000));
    }

    [Fact]
    public void WithoutEventSourcing_FailsSayingWhatToRegister()
    {
        using var services = new ServiceCollection().BuildServiceProvider();

        var create = () => EtlEventStore.Append<Order>(services, o => "s", o => o);

        create.Should().Throw<InvalidOperationException>().WithMessage("EtlEventStore.Append needs event sourcing: call AddEventSourcing(...)*");
    }

    [Theory]
    [InlineData(Store.InMemory)]
    [InlineData(Store.Sqlite)]
    [InlineData(Store.Postgres)]
    public async Task QueueSource_MessagesDeliveredAgainAfterTheirBatchCommitted_AreNotAppendedAgain(Store store)
    {
        var queue = "orders-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(store, queue);
        var sender = host.Services.GetRequiredService<Patterns.Queues.IQueueSender>();
        var ids = Enumerable.Range(1, 12).ToDictionary(i => i, _ => Guid.NewGuid());
        async Task SendAsync(int id) =>
            await sender.SendAsync(queue, new Order(id, id, id, new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc), "paid", "north", "p", "web", null, "e"), new Messaging.MessageOptions { MessageId = ids[id] });
        async Task<EtlRunResult> RunUntilAsync(long rows)
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            return await EtlTransport.FromQueue<Order>(host.Services, queue)
                .To(EtlEventStore.Append<Order>(host.Services, o => StreamOf(o.CustomerId), o => new OrderImported(o.Id, o.CustomerId, o.Amount)), "queue-to-events")
                .RunAsync(new EtlRunOptions { BatchSize = 4, Progress = new StopAt(rows, stop) }, stop.Token);
        }

        for (var id = 1; id <= 10; id++)
        {
            await SendAsync(id);
        }

        (await RunUntilAsync(10)).RowsLoaded.Should().Be(10);

        // Copies of five loaded messages (as a broker delivers them again after a kill between the commit and the
        // acknowledgement), then two new ones: only the new ones are appended.
        for (var id = 1; id <= 5; id++)
        {
            await SendAsync(id);
        }

        await SendAsync(11);
        await SendAsync(12);
        var second = await RunUntilAsync(2);

        second.RowsRead.Should().Be(2, "the five copies are acknowledged without entering the stream");
        (await ReadAllAsync(host.Services)).Select(e => ((OrderImported)e.Data).Id).Order().Should().Equal(Enumerable.Range(1, 12), "each order is appended once");
        var inbox = (IInboxStore)host.Services.GetRequiredService<IUnitOfWorkStorage>();
        (await inbox.ContainsAsync("etl:queue-to-events|", ids[12].ToString("N"))).Should().BeTrue("each batch claims its messages in the store's inbox, in its unit of work");
    }

    private sealed class StopAt(long rows, CancellationTokenSource stop) : IProgress<EtlProgress>
    {
        public void Report(EtlProgress value)
        {
            if (value.RowsLoaded >= rows)
            {
                stop.Cancel();
            }
        }
    }

    private static string StreamOf(long customerId) => "customer-" + (customerId % 7);

    private static EtlPipeline<Order> Pipeline(IServiceProvider services, string csv) =>
        Etl.From(Csv.Read<Order>(csv))
            .To(EtlEventStore.Append<Order>(services, o => StreamOf(o.CustomerId), o => new OrderImported(o.Id, o.CustomerId, o.Amount)), "orders-to-events");

    private static async Task<List<RecordedEvent>> ReadAllAsync(IServiceProvider services) =>
        await services.GetRequiredService<IEventStore>().ReadAllAsync().ToListAsync();

    private async Task<IHost> StartAsync(Store store, string? queue = null)
    {
        if (store == Store.Postgres)
        {
            await Pg.RequireAsync();
            _schema = await Pg.NewSchemaAsync();
        }

        var builder = Host.CreateApplicationBuilder();
        builder.AddEventSourcing(es =>
        {
            switch (store)
            {
                case Store.Sqlite:
                    es.UseSqlite($"Data Source={_dir.File("events.db")}");
                    break;
                case Store.Postgres:
                    es.UsePostgres(Pg.ConnectionString, o => o.Schema = _schema!);
                    break;
                default:
                    es.UseInMemory();
                    break;
            }

            es.AddEvent<OrderImported>("etl.order-imported");
        });
        if (queue is not null)
        {
            builder.AddPatterns(p => p.UseInMemory());
            builder.AddMessageQueue(q => q.AddQueue(queue));
        }

        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    public sealed record OrderImported(int Id, long CustomerId, decimal Amount);

    /// <summary>The application's services, with a unit-of-work store that fails one commit: before it reaches the store, or after it committed (the acknowledgement is lost).</summary>
    private sealed class FlakyServices(IServiceProvider inner, int failOnCommit, Failure failure) : IServiceProvider, IUnitOfWorkStorage
    {
        private readonly IUnitOfWorkStorage _units = inner.GetRequiredService<IUnitOfWorkStorage>();
        private int _commits;

        public object? GetService(Type serviceType) => serviceType == typeof(IUnitOfWorkStorage) ? this : inner.GetService(serviceType);

        public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            if (++_commits != failOnCommit)
            {
                return await _units.CommitAsync(work, cancellationToken);
            }

            if (failure == Failure.AfterCommit)
            {
                await _units.CommitAsync(work, cancellationToken);
            }

            throw new IOException($"injected failure {failure} on commit {_commits}");
        }
    }
}
