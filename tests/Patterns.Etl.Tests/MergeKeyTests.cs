using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class MergeKeyTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void LambdaKey_NamesTheSchemaColumns_InAnyCase_AndWithoutUnderscores()
    {
        EtlKey.Columns(Order.Schema, o => o.Id).Should().Equal("id");
        EtlKey.Columns(Order.Schema, o => new { o.CustomerId, o.Id }).Should().Equal("customer_id", "id");
        EtlKey.Columns(Order.Schema, o => new { o.Region, o.PlacedAt }).Should().Equal("region", "placed_at");
    }

    [Fact]
    public void LambdaKey_ThatIsNotAPropertyOrMatchesNoColumn_FailsNamingIt()
    {
        var computed = () => EtlKey.Columns(Order.Schema, o => o.Id + 1);
        var unknown = () => EtlKey.Columns(Other.Schema, o => o.Missing);

        computed.Should().Throw<ArgumentException>().WithMessage("The key o => * must name properties of Order: o => o.Id, or o => new { o.Region, o.Id } for a key of several columns.*");
        unknown.Should().Throw<ArgumentException>().WithMessage("The key o => * names Other.Missing, which matches no column of the schema (id): name the column(s) as strings instead.*");
    }

    [Fact]
    public async Task SqliteMerge_WithALambdaKey_InsertsAndUpdates()
    {
        var orders = SqliteLoadTests.Generated(100);
        var sink = Sqlite.Merge<Order>(_dir.Sqlite(), "orders", key: o => o.Id);
        await Etl.From(orders).To(sink).RunAsync(new EtlRunOptions { Bookmarks = false });
        var delta = orders.Take(50).Select(o => o with { Status = "changed" }).Concat(SqliteLoadTests.Generated(10, seed: 7, firstId: 101)).ToList();

        var result = await Etl.From(delta).To(sink).RunAsync(new EtlRunOptions { Bookmarks = false });

        result.RowsUpdated.Should().Be(50);
        result.RowsInserted.Should().Be(10);
        Db.ReadSqlite(_dir.Sqlite()).Should().Equal(delta.Take(50).Concat(orders.Skip(50)).Concat(delta.Skip(50)));
    }

    private sealed record Other(int Id, int Missing) : IEtlRecord<Other>
    {
        public static EtlSchema<Other> Schema { get; } = EtlSchema.For(r => new Other(r.Int32(0), 0)).Column("id", o => o.Id);
    }
}
