using System.Text;
using Patterns.Orchestration.Runtime;
using Patterns.Storage;

namespace Patterns.Orchestration.Tests;

/// <summary>Instance-record reads: at most a few in flight; the ones that wait meanwhile go to the store as one read.</summary>
public sealed class DocumentReaderTests
{
    [Fact]
    public async Task ReadsBeyondTheLimit_WaitForAReadInFlight_AndThenGoAsOneRead()
    {
        var store = new GatedDocuments();
        store.Documents["a"] = Encoding.UTF8.GetBytes("A");
        store.Documents["c"] = Encoding.UTF8.GetBytes("C");
        var reader = new DocumentReader(store, "records", maxInFlight: 2, CancellationToken.None);

        var first = reader.ReadAsync("a");
        var second = reader.ReadAsync("b");
        var waiting = new[] { reader.ReadAsync("c"), reader.ReadAsync("d"), reader.ReadAsync("c") };

        store.Singles.Should().Equal("a", "b");
        store.Batches.Should().BeEmpty("two reads are in flight");
        waiting.Should().OnlyContain(t => !t.IsCompleted);

        store.Gate.TrySetResult();
        Encoding.UTF8.GetString((await first.WaitAsync(TestHost.Wait))!).Should().Be("A");
        (await second.WaitAsync(TestHost.Wait)).Should().BeNull();
        var results = await Task.WhenAll(waiting).WaitAsync(TestHost.Wait);

        results.Select(r => r is null ? null : Encoding.UTF8.GetString(r)).Should().Equal("C", null, "C");
        store.Batches.Should().ContainSingle().Which.Should().BeEquivalentTo(new[] { "c", "d" });
        store.Singles.Should().Equal("a", "b");

        // Nothing in flight any more: the next read goes alone at once.
        (await reader.ReadAsync("d").WaitAsync(TestHost.Wait)).Should().BeNull();
        store.Singles.Should().Equal("a", "b", "d");
    }

    [Fact]
    public async Task ABatchThatFails_FailsEachOfItsReads_AndFreesItsPlace()
    {
        var store = new GatedDocuments { FailBatches = true };
        var reader = new DocumentReader(store, "records", maxInFlight: 1, CancellationToken.None);

        var first = reader.ReadAsync("a");
        var waiting = reader.ReadAsync("b");
        store.Gate.TrySetResult();
        await first.WaitAsync(TestHost.Wait);

        await waiting.Invoking(t => t.WaitAsync(TestHost.Wait)).Should().ThrowAsync<InvalidOperationException>();
        (await reader.ReadAsync("c").WaitAsync(TestHost.Wait)).Should().BeNull();
        store.Singles.Should().Equal("a", "c");
    }

    [Fact]
    public async Task ABatchThatFailsOnOneId_ReadsEachIdAgain_AndFailsOnlyThatRead()
    {
        var store = new GatedDocuments { BadId = "bad" };
        store.Documents["b"] = Encoding.UTF8.GetBytes("B");
        store.Documents["c"] = Encoding.UTF8.GetBytes("C");
        var reader = new DocumentReader(store, "records", maxInFlight: 1, CancellationToken.None);

        var first = reader.ReadAsync("a");
        var b = reader.ReadAsync("b");
        var bad = reader.ReadAsync("bad");
        var c = reader.ReadAsync("c");
        store.Gate.TrySetResult();
        await first.WaitAsync(TestHost.Wait);

        Encoding.UTF8.GetString((await b.WaitAsync(TestHost.Wait))!).Should().Be("B");
        Encoding.UTF8.GetString((await c.WaitAsync(TestHost.Wait))!).Should().Be("C");
        await bad.Invoking(t => t.WaitAsync(TestHost.Wait)).Should().ThrowAsync<ArgumentException>();
        store.Batches.Should().ContainSingle().Which.Should().BeEquivalentTo(new[] { "b", "bad", "c" });
        (await reader.ReadAsync("d").WaitAsync(TestHost.Wait)).Should().BeNull("the place is free again");
    }

    [Fact]
    public async Task ReadsThatWait_GoInBatchesOfAtMostTheLimit_UnderTheReadersToken()
    {
        using var stopping = new CancellationTokenSource();
        var store = new GatedDocuments();
        var reader = new DocumentReader(store, "records", maxInFlight: 1, stopping.Token);

        var first = reader.ReadAsync("first");
        var waiting = Enumerable.Range(0, DocumentReader.MaxBatch + 44).Select(i => reader.ReadAsync($"id-{i}")).ToArray();
        store.Gate.TrySetResult();
        await first.WaitAsync(TestHost.Wait);
        await Task.WhenAll(waiting).WaitAsync(TestHost.Wait);

        store.Batches.Select(batch => batch.Length).Should().Equal(DocumentReader.MaxBatch, 44);
        store.Tokens.Should().HaveCount(3).And.OnlyContain(token => token == stopping.Token);
    }

    private sealed class GatedDocuments : IDocumentStorage
    {
        public Dictionary<string, byte[]> Documents { get; } = new(StringComparer.Ordinal);

        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public List<string> Singles { get; } = [];

        public List<string[]> Batches { get; } = [];

        public bool FailBatches { get; init; }

        public string? BadId { get; init; }

        public List<CancellationToken> Tokens { get; } = [];

        public async ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default)
        {
            lock (Singles)
            {
                Singles.Add(id);
                Tokens.Add(cancellationToken);
            }

            await Gate.Task.ConfigureAwait(false);
            if (id == BadId)
            {
                throw new ArgumentException("the store refuses this id", nameof(id));
            }

            return Documents.GetValueOrDefault(id);
        }

        public ValueTask<IReadOnlyDictionary<string, byte[]>> GetManyAsync(string collection, IReadOnlyCollection<string> ids, CancellationToken cancellationToken = default)
        {
            lock (Singles)
            {
                Batches.Add([.. ids]);
                Tokens.Add(cancellationToken);
            }

            if (BadId is not null && ids.Contains(BadId))
            {
                throw new ArgumentException("the store refuses this id", nameof(ids));
            }

            if (FailBatches)
            {
                throw new InvalidOperationException("the store failed");
            }

            IReadOnlyDictionary<string, byte[]> found = ids.Where(Documents.ContainsKey).ToDictionary(id => id, id => Documents[id], StringComparer.Ordinal);
            return ValueTask.FromResult(found);
        }

        public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default) => throw new NotSupportedException();
    }
}
